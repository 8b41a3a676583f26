//! The signed-in user of a console request (`Session`, from the session cookie), the management
//! API called in-process as that user (`Api`), a POST whose CSRF token matched (`Posted`), and the
//! cookies and redirects around them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::OnceLock;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use base64::Engine as _;
use serde_json::Value;
use sha2::Digest as _;
use tower::ServiceExt as _;

use super::html::error_page;
use crate::auth::Principal;
use crate::state::AppState;

/// The session cookie. Under TLS it carries the `__Host-` prefix (Secure, Path=/, no Domain).
pub(super) const COOKIE: &str = "berth_session";
pub(super) const TLS_COOKIE: &str = "__Host-berth_session";
/// A one-time message shown on the next page (a PRG redirect's outcome).
pub(super) const FLASH: &str = "berth_flash";
/// How long a console session lives.
pub(super) const SESSION_TTL: std::time::Duration = std::time::Duration::from_secs(12 * 3600);
/// The largest form a console POST may send.
pub(super) const FORM_MAX: usize = 256 * 1024;

/// A 303 to `to` (after a POST, the browser GETs it: reloading never posts twice).
pub(super) fn see_other(to: &str) -> Response {
    match HeaderValue::from_str(to) {
        Ok(v) => (StatusCode::SEE_OTHER, [(header::LOCATION, v)]).into_response(),
        Err(_) => error_page(StatusCode::BAD_REQUEST, "That address is not valid."),
    }
}

/// The routers the console calls in-process, built once (their tables are fixed).
static API: OnceLock<Router<AppState>> = OnceLock::new();
static REGISTRY: OnceLock<Router<AppState>> = OnceLock::new();

fn routes(
    cell: &'static OnceLock<Router<AppState>>,
    build: fn() -> Router<AppState>,
) -> Router<AppState> {
    cell.get_or_init(build).clone()
}

/// What a refused or failed API call said.
#[derive(Debug, Clone)]
pub(super) struct Failure {
    pub(super) status: StatusCode,
    pub(super) message: String,
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        error_page(self.status, &self.message)
    }
}

/// The management API called in-process as the signed-in user.
#[derive(Clone)]
pub(super) struct Api {
    state: AppState,
    auth: HeaderValue,
    basic: HeaderValue,
    addr: Option<ConnectInfo<SocketAddr>>,
}

impl Api {
    /// A GET; the future owns its path, so several can run at once (`tokio::join!`).
    pub(super) async fn get(&self, path: impl Into<String>) -> Result<Value, Failure> {
        self.call(Method::GET, &path.into(), None, None).await
    }

    pub(super) async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Failure> {
        self.call(method, path, body, None).await
    }

    /// A call with an `Organization` header (registry tokens).
    pub(super) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        org: Option<&str>,
    ) -> Result<Value, Failure> {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::AUTHORIZATION, self.auth.clone());
        if let Some(o) = org.and_then(|o| HeaderValue::from_str(o).ok()) {
            b = b.header("organization", o);
        }
        let body = match body {
            Some(v) => {
                b = b.header(header::CONTENT_TYPE, "application/json");
                Body::from(v.to_string())
            }
            None => Body::empty(),
        };
        let mut req = b.body(body).map_err(|e| Failure {
            status: StatusCode::BAD_REQUEST,
            message: e.to_string(),
        })?;
        if let Some(a) = self.addr {
            req.extensions_mut().insert(a);
        }
        // `/v2` takes the session's login as Basic credentials (its bearer tokens are the token
        // service's); the API takes the session's access token.
        let resp = if path.starts_with("/v2/") {
            req.headers_mut()
                .insert(header::AUTHORIZATION, self.basic.clone());
            routes(&REGISTRY, || {
                Router::new().route("/v2/{*rest}", any(crate::http::oci::handle))
            })
            .with_state(self.state.clone())
            .oneshot(req)
            .await
        } else {
            routes(&API, crate::http::api::router)
                .with_state(self.state.clone())
                .oneshot(req)
                .await
        };
        let resp = match resp {
            Ok(r) => r,
            Err(never) => match never {},
        };
        let status = resp.status();
        let bytes = axum::body::to_bytes(resp.into_body(), 32 * 1024 * 1024)
            .await
            .map_err(|e| Failure {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                message: e.to_string(),
            })?;
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        if status.is_success() {
            Ok(v)
        } else {
            let message = v["error"]["message"]
                .as_str()
                .or_else(|| v["errors"][0]["message"].as_str())
                .map_or_else(
                    || status.canonical_reason().unwrap_or("failed").to_owned(),
                    str::to_owned,
                );
            Err(Failure { status, message })
        }
    }
}

/// A refused form, shown again on its page: which form it was (its action), why it was refused,
/// and what was typed (except passwords and the CSRF token), so nothing is lost. `shown` says a
/// form of the page showed the refusal beside itself (else the page shows it above its title).
#[derive(Clone)]
pub(super) struct Kept {
    pub(super) action: String,
    pub(super) message: String,
    fields: HashMap<String, String>,
    shown: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Kept {
    pub(super) fn was_shown(&self) -> bool {
        self.shown.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// The console's own router, to render a page in-process when a form on it was refused; its
/// builder is given by the console's `router` (so this file does not import its parent).
static CONSOLE: OnceLock<Router<AppState>> = OnceLock::new();
pub(super) static CONSOLE_BUILD: OnceLock<fn() -> Router<AppState>> = OnceLock::new();

/// The signed-in user of a console request.
pub(super) struct Session {
    pub(super) user: String,
    pub(super) admin: bool,
    pub(super) api: Api,
    /// The form field every POST must echo.
    pub(super) csrf: String,
    /// A message from the action before (shown once).
    pub(super) flash: Option<String>,
    /// This registry as clients name it (`host[:port]`) and its base URL.
    pub(super) host: String,
    pub(super) base_url: String,
    pub(super) refresh: String,
    /// The form refused just now, when this page is shown again because of it.
    pub(super) kept: Option<Kept>,
}

pub(super) fn cookie<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn csrf_of(refresh: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(b"berth console csrf\0");
    h.update(refresh.as_bytes());
    hex::encode(&h.finalize()[..20])
}

/// The session cookie's name on this server.
fn cookie_name(st: &AppState) -> &'static str {
    if st.web.tls { TLS_COOKIE } else { COOKIE }
}

/// `Set-Cookie` of a session (or its end, for `None`).
pub(super) fn session_cookie(st: &AppState, refresh: Option<&str>) -> HeaderValue {
    let secure = if st.web.tls { "; Secure" } else { "" };
    let v = match refresh {
        Some(t) => format!(
            "{}={t}; Path=/; HttpOnly; SameSite=Strict{secure}",
            cookie_name(st)
        ),
        None => format!(
            "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
            cookie_name(st)
        ),
    };
    HeaderValue::from_str(&v).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// A redirect that shows `message` on the next page.
pub(super) fn redirect_with(st: &AppState, to: &str, message: &str) -> Response {
    let mut r = see_other(to);
    let secure = if st.web.tls { "; Secure" } else { "" };
    let v = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(message);
    if let Ok(h) = HeaderValue::from_str(&format!(
        "{FLASH}={v}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=60{secure}"
    )) {
        r.headers_mut().append(header::SET_COOKIE, h);
    }
    r
}

fn host_of(st: &AppState, parts: &Parts) -> (String, String) {
    if let Some(u) = &st.web.public_url {
        let u = u.trim_end_matches('/').to_owned();
        let host = u.split("://").nth(1).unwrap_or(&u).to_owned();
        return (host, u);
    }
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let scheme = if st.web.tls { "https" } else { "http" };
    (host.clone(), format!("{scheme}://{host}"))
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, st: &AppState) -> Result<Self, Response> {
        let sign_in = || see_other("/ui/login");
        let Some(refresh) = cookie(&parts.headers, cookie_name(st)).map(str::to_owned) else {
            return Err(sign_in());
        };
        let client = crate::http::access::client_info(parts);
        let state = st.clone();
        let token = refresh.clone();
        let checked = tokio::task::spawn_blocking(move || {
            let login = state.auth.login("iamrefresh", &token, &client).ok()?;
            let Principal::User { name, .. } = &login.principal else {
                return None;
            };
            let admin = state.auth.grants(&login.principal).ok()?.admin;
            let (jwt, _) = crate::http::api::session::access(&state, &login).ok()?;
            Some((name.clone(), admin, jwt))
        })
        .await
        .ok()
        .flatten();
        let Some((user, admin, jwt)) = checked else {
            let mut r = sign_in();
            r.headers_mut()
                .append(header::SET_COOKIE, session_cookie(st, None));
            return Err(r);
        };
        let flash = cookie(&parts.headers, FLASH).and_then(|v| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(v)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
        });
        let (host, base_url) = host_of(st, parts);
        Ok(Session {
            user,
            admin,
            api: Api {
                state: st.clone(),
                auth: HeaderValue::from_str(&format!("Bearer {jwt}")).map_err(|_| sign_in())?,
                basic: HeaderValue::from_str(&format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD
                        .encode(format!("iamrefresh:{refresh}"))
                ))
                .map_err(|_| sign_in())?,
                addr: parts.extensions.get::<ConnectInfo<SocketAddr>>().copied(),
            },
            csrf: csrf_of(&refresh),
            flash,
            host,
            base_url,
            refresh,
            kept: parts.extensions.get::<Kept>().cloned(),
        })
    }
}

impl Session {
    pub(super) fn state(&self) -> &AppState {
        &self.api.state
    }

    /// The refusal of the form posted to `action`, if it is the one refused: shown beside it.
    pub(super) fn refusal(&self, action: &str) -> Option<&str> {
        let k = self.kept.as_ref().filter(|k| k.action == action)?;
        k.shown.store(true, std::sync::atomic::Ordering::Relaxed);
        Some(&k.message)
    }

    /// What was typed in field `field` of the form posted to `action`, when it was refused.
    pub(super) fn typed(&self, action: &str, field: &str) -> Option<&str> {
        self.kept
            .as_ref()
            .filter(|k| k.action == action)
            .and_then(|k| k.fields.get(field))
            .map(String::as_str)
    }

    /// The organizations the user belongs to (a server admin: all of them).
    pub(super) async fn orgs(&self) -> Vec<String> {
        self.api.get("/orgs").await.map_or_else(
            |_| Vec::new(),
            |v| {
                v["orgs"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|o| o["name"].as_str().map(str::to_owned))
                            .collect()
                    })
                    .unwrap_or_default()
            },
        )
    }
}

/// A POST of the console: the session, and the form once its CSRF token matched.
pub(super) struct Posted {
    pub(super) session: Session,
    pub(super) form: HashMap<String, String>,
    /// Where the form was posted (its `action`).
    action: String,
    /// The page the form is on, when a refusal should not be shown on the page a success goes to.
    form_page: Option<String>,
    /// The request's cookies and host, to show the form's page again as this user.
    cookies: Option<HeaderValue>,
    host: Option<HeaderValue>,
}

impl Posted {
    /// The one API call a form asks for, as the signed-in user; then a redirect to `back` that
    /// says `done`, or the page of the refusal. `org` goes in the `Organization` header.
    pub(super) async fn act(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
        org: Option<&str>,
        back: &str,
        done: &str,
    ) -> Response {
        match self.session.api.call(method, path, body, org).await {
            Ok(_) => redirect_with(self.session.state(), back, done),
            Err(f) => {
                let page = self.form_page.as_deref().unwrap_or(back);
                self.refuse(f.status, &f.message, page).await
            }
        }
    }

    /// The form is on page `page` (a refusal is shown there, not on the page a success goes to).
    pub(super) fn form_on(mut self, page: String) -> Posted {
        self.form_page = Some(page);
        self
    }

    /// The refusal of this form, shown on page `page` beside the form with what was typed kept
    /// (the page rendered in-process as this user, answered with `status`); a page that cannot
    /// be shown gives the error page.
    pub(super) async fn refuse(&self, status: StatusCode, message: &str, page: &str) -> Response {
        let fields = self
            .form
            .iter()
            .filter(|(k, _)| *k != "_csrf" && !k.contains("password"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let kept = Kept {
            action: self.action.clone(),
            message: message.to_owned(),
            fields,
            shown: std::sync::Arc::default(),
        };
        let mut b = Request::builder().method(Method::GET).uri(page);
        for (name, v) in [(header::COOKIE, &self.cookies), (header::HOST, &self.host)] {
            if let Some(v) = v {
                b = b.header(name, v.clone());
            }
        }
        let Ok(mut req) = b.body(Body::empty()) else {
            return error_page(status, message);
        };
        req.extensions_mut().insert(kept);
        if let Some(a) = self.session.api.addr {
            req.extensions_mut().insert(a);
        }
        let Some(build) = CONSOLE_BUILD.get() else {
            return error_page(status, message);
        };
        let resp = match routes(&CONSOLE, *build)
            .with_state(self.session.state().clone())
            .oneshot(req)
            .await
        {
            Ok(r) => r,
            Err(never) => match never {},
        };
        if resp.status() != StatusCode::OK {
            return error_page(status, message);
        }
        let (mut parts, body) = resp.into_parts();
        parts.status = status;
        Response::from_parts(parts, body)
    }

    /// A field of the form, trimmed; empty or absent: `None`.
    pub(super) fn field(&self, k: &str) -> Option<&str> {
        self.form.get(k).map(|v| v.trim()).filter(|v| !v.is_empty())
    }
}

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, st: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, st).await?;
        let action = parts.uri.path().to_owned();
        let cookies = parts.headers.get(header::COOKIE).cloned();
        let host = parts.headers.get(header::HOST).cloned();
        let bytes = axum::body::to_bytes(body, FORM_MAX)
            .await
            .map_err(|_| error_page(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large."))?;
        let form: HashMap<String, String> = serde_urlencoded::from_bytes(&bytes)
            .map_err(|_| error_page(StatusCode::BAD_REQUEST, "The form could not be read."))?;
        let sent = form.get("_csrf").map_or("", String::as_str);
        let ok: bool =
            subtle::ConstantTimeEq::ct_eq(sent.as_bytes(), session.csrf.as_bytes()).into();
        if !ok {
            return Err(error_page(
                StatusCode::FORBIDDEN,
                "This form is stale or was not sent from this console; reload the page and try again.",
            ));
        }
        Ok(Posted {
            session,
            form,
            action,
            form_page: None,
            cookies,
            host,
        })
    }
}
