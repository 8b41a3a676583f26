//! What a handler leaves on its answer for the middleware: the route's name (metrics, logs) and
//! the internal cause behind a 5xx (logged once, never sent).

use axum::http::StatusCode;

/// The parsed route's name, set on the response by the handler that served it.
#[derive(Clone, Copy)]
pub(crate) struct RouteName(pub(crate) &'static str);

/// An internal cause behind a 5xx answer, for the middleware to log (never sent to the client).
#[derive(Clone)]
pub(crate) struct InternalError(pub(crate) String);

impl InternalError {
    /// Whether the cause is a store that cannot be reached right now (database or bucket down,
    /// every connection busy): the answer is then 503, which clients retry, not 500. Causes
    /// travel as text through the auth and API layers; the stores' `Unavailable` errors are the
    /// only ones whose text starts with these words.
    pub(crate) fn unavailable(cause: &str) -> bool {
        [
            crate::store::UNAVAILABLE,
            crate::blob::UNAVAILABLE,
            crate::auth::workload::UNAVAILABLE,
        ]
        .iter()
        .any(|p| cause.starts_with(p))
    }

    /// 500, or 503 with a `Retry-After` for an unreachable store.
    pub(crate) fn status(cause: &str) -> StatusCode {
        if Self::unavailable(cause) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        }
    }
}
