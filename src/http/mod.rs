//! The HTTP surface: the router, the request middleware (metrics, one log line per error) and the
//! operational endpoints `/healthz`, `/readyz`, `/metrics`.
//!
//! Layering: handlers call `content`; nothing under `http` touches the stores directly except the
//! read-only health and metrics probes.

pub(crate) mod access;
pub(crate) mod answer;
pub(crate) mod api;
pub(crate) mod body;
mod console;
mod metrics;
pub(crate) mod oci;
pub(crate) mod token;

use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};

pub use crate::metrics::Metrics;

use crate::state::AppState;
use answer::{InternalError, RouteName};

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v2", any(oci::handle))
        .route("/v2/", any(oci::handle))
        .route("/v2/{*rest}", any(oci::handle))
        .route("/token", get(token::get).post(token::post))
        .route("/.well-known/jwks.json", get(token::jwks))
        .route("/api/v1/keys/ca.pem", get(token::ca_pem))
        .nest("/api/v1", api::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .merge(console::router())
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), observe))
        .with_state(state)
}

/// Records metrics for every request and logs it; errors are logged here and only here.
async fn observe(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().clone();
    let (mut parts, body) = req.into_parts();
    // HTTP/2 carries the host in the `:authority` of the URI, not in a Host header; the token
    // realm and upload locations are built from Host, so give it one.
    if !parts.headers.contains_key(axum::http::header::HOST)
        && let Some(v) = parts
            .uri
            .authority()
            .and_then(|a| axum::http::HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(axum::http::header::HOST, v);
    }
    // Every body but an upload's (held to its rate with the length its chunk announces, by
    // `oci::uploads`) must arrive at the minimum rate.
    let body = match has_body(&parts) && !is_upload(&parts) {
        true => {
            let len = parts
                .headers
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok()?.parse().ok());
            Body::from_stream(body::Bounded::new(body, len))
        }
        false => body,
    };
    let req = Request::from_parts(
        parts,
        Body::new(metrics::CountingBody::new(body, state.metrics.clone())),
    );
    let mut resp = next.run(req).await;
    // Under TLS, browsers are told to use nothing else for this host.
    if state.web.tls {
        resp.headers_mut().insert(
            header::STRICT_TRANSPORT_SECURITY,
            axum::http::HeaderValue::from_static("max-age=31536000"),
        );
    }
    let route = resp
        .extensions()
        .get::<RouteName>()
        .map_or("other", |r| r.0);
    let status = resp.status();
    let elapsed = start.elapsed();
    let out_len = if method == axum::http::Method::HEAD {
        0
    } else {
        resp.headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0)
    };
    state
        .metrics
        .record(route, status.as_u16(), elapsed, out_len);
    let ms = elapsed.as_secs_f64() * 1000.0;
    // Every 503 tells clients when to try again (a store down or read-only, shutting down).
    if status == StatusCode::SERVICE_UNAVAILABLE
        && !resp.headers().contains_key(header::RETRY_AFTER)
    {
        resp.headers_mut().insert(
            header::RETRY_AFTER,
            axum::http::HeaderValue::from_static("1"),
        );
    }
    if let Some(InternalError(cause)) = resp.extensions().get::<InternalError>() {
        tracing::error!(%method, route, status = status.as_u16(), ms, cause = %cause, "request failed");
    } else if status.is_client_error() {
        tracing::debug!(%method, route, status = status.as_u16(), ms, "request refused");
    } else {
        tracing::trace!(%method, route, status = status.as_u16(), ms, "request");
    }
    resp
}

/// Whether the request comes with a body (a length above 0, or chunks).
fn has_body(parts: &axum::http::request::Parts) -> bool {
    parts.headers.contains_key(header::TRANSFER_ENCODING)
        || parts
            .headers
            .get(header::CONTENT_LENGTH)
            .is_some_and(|v| v.as_bytes() != b"0")
}

/// Whether the request sends an upload's bytes (its body's rate is `oci::uploads`' to hold).
fn is_upload(parts: &axum::http::request::Parts) -> bool {
    parts.uri.path().starts_with("/v2/")
        && matches!(
            oci::route::OciRoute::parse(&parts.method, parts.uri.path()),
            Ok(oci::route::OciRoute::StartUpload { .. }
                | oci::route::OciRoute::PatchUpload { .. }
                | oci::route::OciRoute::PutUpload { .. })
        )
}

fn named(name: &'static str, resp: impl IntoResponse) -> Response {
    let mut resp = resp.into_response();
    resp.extensions_mut().insert(RouteName(name));
    resp
}

async fn not_found() -> Response {
    (StatusCode::NOT_FOUND, "not found\n").into_response()
}

async fn healthz() -> Response {
    named("healthz", "ok\n")
}

/// Ready when the metadata store answers and the server is not shutting down.
async fn readyz(State(state): State<AppState>) -> Response {
    if state.shutting_down() {
        return named(
            "readyz",
            (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"),
        );
    }
    let meta = state.content.meta().clone();
    let mut pinged =
        tokio::task::spawn_blocking(move || meta.read(|r| r.ping()).map_err(|e| e.to_string()))
            .await
            .unwrap_or_else(|e| Err(e.to_string()));
    if pinged.is_ok() {
        pinged = state
            .content
            .blobs()
            .ping()
            .await
            .map_err(|e| e.to_string());
    }
    match pinged {
        Ok(()) => named("readyz", "ready\n"),
        Err(e) => {
            let mut resp = named(
                "readyz",
                (StatusCode::SERVICE_UNAVAILABLE, "storage unavailable\n"),
            );
            resp.extensions_mut().insert(InternalError(e));
            resp
        }
    }
}

async fn metrics(State(state): State<AppState>, req: axum::extract::Request) -> Response {
    let (parts, _) = req.into_parts();
    // Credential names and owners are for a server admin's scrape (Basic auth with an admin's
    // API key or password), not for anyone who can reach /metrics.
    let admin = matches!(
        access::identify(&state, &parts).await,
        Ok(access::Caller::Principal(
            crate::auth::Principal::User { admin: true, .. },
            _
        ))
    );
    let meta = state.content.meta().clone();
    let stored = tokio::task::spawn_blocking(move || {
        meta.read(|r| r.blob_stats()).map_err(|e| e.to_string())
    })
    .await
    .unwrap_or_else(|e| Err(e.to_string()));
    let (blobs, bytes) = match stored {
        Ok(s) => s,
        Err(e) => {
            let mut resp = named("metrics", InternalError::status(&e));
            resp.extensions_mut().insert(InternalError(e));
            return resp;
        }
    };
    // When each credential expires, so that an alert fires before a pull secret stops working.
    let st = state.clone();
    let expiries = if admin {
        tokio::task::spawn_blocking(move || st.auth.iam().credential_expiries())
            .await
            .ok()
            .and_then(Result::ok)
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let text = state.metrics.render(crate::metrics::Readings {
        uploads_active: state.content.uploads_active(),
        upload_memory_free: state.content.upload_memory_free(),
        download_memory_free: state.content.download_memory_free(),
        download_memory_reclaimed: state.content.download_memory_reclaimed(),
        blobs,
        blob_bytes: bytes,
        exchanges: state.auth.exchange_counts(),
        expiries: expiries
            .into_iter()
            .map(|e| crate::metrics::CredentialExpiry {
                org: e.org,
                kind: e.kind,
                owner: e.owner,
                name: e.name,
                expires_at: e.expires_at,
            })
            .collect(),
    });
    named(
        "metrics",
        ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text),
    )
}
