//! What a handler leaves on its answer for the middleware: the route's name (metrics, logs) and
//! the internal cause behind a 5xx (logged once, never sent).

use axum::http::StatusCode;

/// The parsed route's name, set on the response by the handler that served it.
#[derive(Clone, Copy)]
pub(crate) struct RouteName(pub(crate) &'static str);

/// An internal cause behind a 5xx answer, for the middleware to log (never sent to the client).
#[derive(Clone)]
pub(crate) struct InternalError(pub(crate) String);

/// What kind of trouble a 5xx cause is, by how its text starts (causes travel as text through
/// the auth and API layers; the stores' errors are the only ones whose text starts so).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Condition {
    /// A store cannot be reached right now (database or bucket down, every connection busy):
    /// 503 with `Retry-After`, which clients retry.
    Unavailable,
    /// The disk under a store is full: 507; nothing was stored, and the same request succeeds
    /// once space is freed.
    Full,
    /// A store's filesystem is read-only or refuses writes: 503 with `Retry-After`; reads go on.
    ReadOnly,
    /// Anything else: 500.
    Internal,
}

impl Condition {
    pub(crate) fn of(cause: &str) -> Condition {
        let unavailable = [
            crate::store::UNAVAILABLE,
            crate::blob::UNAVAILABLE,
            crate::auth::workload::UNAVAILABLE,
        ];
        if unavailable.iter().any(|p| cause.starts_with(p)) {
            Condition::Unavailable
        } else if cause.starts_with(crate::store::STORAGE_FULL) {
            Condition::Full
        } else if cause.starts_with(crate::store::STORAGE_READ_ONLY) {
            Condition::ReadOnly
        } else {
            Condition::Internal
        }
    }

    pub(crate) fn status(self) -> StatusCode {
        match self {
            Condition::Unavailable | Condition::ReadOnly => StatusCode::SERVICE_UNAVAILABLE,
            Condition::Full => StatusCode::INSUFFICIENT_STORAGE,
            Condition::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The error code of the registry protocol's answer (`/v2`, `/token`'s Docker errors).
    pub(crate) fn oci_code(self) -> &'static str {
        match self {
            Condition::Unavailable | Condition::ReadOnly => "UNAVAILABLE",
            Condition::Full | Condition::Internal => "UNKNOWN",
        }
    }

    /// What the client is told (the cause itself is logged, never sent).
    pub(crate) fn message(self) -> &'static str {
        match self {
            Condition::Unavailable => "the registry's storage is unavailable; retry later",
            Condition::Full => {
                "the registry's storage is full: nothing was stored; retry once space is freed"
            }
            Condition::ReadOnly => {
                "the registry's storage cannot be written (read-only or failing): nothing was stored; reads go on"
            }
            Condition::Internal => "internal error",
        }
    }
}

impl InternalError {
    /// 500; 503 for an unreachable or read-only store; 507 for a full one.
    pub(crate) fn status(cause: &str) -> StatusCode {
        Condition::of(cause).status()
    }
}
