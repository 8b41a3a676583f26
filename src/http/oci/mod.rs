//! The OCI Distribution API under `/v2`: one wildcard route, a parser, then dispatch.
//!
//! `handle` parses every request into an `OciRoute` (see `route.rs`) before any handler runs; the
//! route knows its repository and the action it needs, so `authorize` is the one check in front of
//! all handlers. Handlers return `Result<Response, OciError>`.

pub(crate) mod blobs;
pub(crate) mod error;
mod headers;
mod listing;
mod manifests;
pub(crate) mod route;
pub(crate) mod uploads;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(crate) use error::OciError;
use headers::{API_VERSION, Query};
use route::{Action as RouteAction, OciRoute};

use crate::auth::{AuthError, Principal};
use crate::content::RepositoryName;
use crate::http::access::{self, Caller, Denial};
use crate::http::answer::RouteName;
use crate::policy::{self, Action, Actions};
use crate::state::AppState;

/// Every `/v2` request comes through here: parse, identify the caller, decide, dispatch.
pub(crate) async fn handle(State(state): State<AppState>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts.uri.path().strip_prefix("/v2").unwrap_or_default();
    let mut resp = match OciRoute::parse(&parts.method, path) {
        Ok(route) => {
            let name = route.name();
            let query: Query = parts
                .uri
                .query()
                .and_then(|q| serde_urlencoded::from_str(q).ok())
                .unwrap_or_default();
            let decided = match access::identify(&state, &parts).await {
                Ok(caller) => authorize(&state, &route, &caller).await.map(|()| caller),
                Err(denial) => Err(denial),
            };
            let mut resp = match decided {
                Ok(caller) => dispatch(
                    &state,
                    &caller,
                    route,
                    &query,
                    &parts.headers,
                    client(&parts),
                    body,
                )
                .await
                .unwrap_or_else(IntoResponse::into_response),
                Err(denial) => denial.into_response(&state, &parts.headers),
            };
            resp.extensions_mut().insert(RouteName(name));
            resp
        }
        Err(e) => OciError::from(e).into_response(),
    };
    resp.headers_mut()
        .insert(API_VERSION, HeaderValue::from_static("registry/2.0"));
    resp
}

/// The scope a client should ask the token service for to do `action` on `repo`.
fn scope_for(repo: &str, action: RouteAction) -> String {
    let actions = match action {
        RouteAction::Push => "pull,push",
        RouteAction::Delete => "delete",
        _ => "pull",
    };
    format!("repository:{repo}:{actions}")
}

/// The one authorization check in front of every handler.
async fn authorize(state: &AppState, route: &OciRoute, caller: &Caller) -> Result<(), Denial> {
    let action = route.required_action();
    let need = match action {
        RouteAction::None => {
            return if caller.is_anonymous() {
                Err(Denial::Challenge {
                    scope: None,
                    insufficient: false,
                })
            } else {
                Ok(())
            };
        }
        RouteAction::Catalog => {
            let scope = Some("registry:catalog:*".to_owned());
            return match caller {
                Caller::Token(c)
                    if c.access
                        .iter()
                        .any(|a| a.kind == "registry" && a.name == "catalog") =>
                {
                    Ok(())
                }
                Caller::Token(_) => Err(Denial::Challenge {
                    scope,
                    insufficient: true,
                }),
                c if c.is_anonymous() => Err(Denial::Challenge {
                    scope,
                    insufficient: false,
                }),
                Caller::Principal(..) => Ok(()),
            };
        }
        RouteAction::Pull => Action::Pull,
        RouteAction::Push => Action::Push,
        RouteAction::Delete => Action::Delete,
    };
    let Some(repo) = route.repository() else {
        return Ok(());
    };
    let allowed = actions_on(state, caller, repo).await?;
    if !allowed.contains(need) {
        return Err(match caller {
            Caller::Token(_) => Denial::Challenge {
                scope: Some(scope_for(repo.as_str(), action)),
                insufficient: true,
            },
            c if c.is_anonymous() => Denial::Challenge {
                scope: Some(scope_for(repo.as_str(), action)),
                insufficient: false,
            },
            // The same answer whether or not the namespace exists: a caller that may not act
            // there does not learn which names are taken. It names what was missing, which the
            // caller knows already (what it asked for, and who it is).
            Caller::Principal(p, _) => Denial::Denied(format!(
                "{} on {repo} is not granted to {}",
                need.as_str(),
                p.subject()
            )),
        });
    }
    if matches!(
        route,
        OciRoute::StartUpload { .. } | OciRoute::PutManifest { .. }
    ) {
        ensure_namespace(state, caller, repo).await?;
    }
    Ok(())
}

/// What `caller` may do on `repo`: from the token's claims, or decided from the caller's grants.
async fn actions_on(
    state: &AppState,
    caller: &Caller,
    repo: &RepositoryName,
) -> Result<Actions, Denial> {
    match caller {
        Caller::Token(claims) => Ok(access::token_actions(claims, repo.as_str())),
        Caller::Principal(..) => {
            let (caller, repo) = (caller.clone(), repo.clone());
            blocking(state, move |st| caller.actions_on(st, repo.as_str())).await
        }
    }
}

/// Runs blocking identity work (SQLite reads, argon2) off the executor.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&AppState) -> Result<T, AuthError> + Send + 'static,
) -> Result<T, Denial> {
    let st = state.clone();
    tokio::task::spawn_blocking(move || f(&st))
        .await
        .map_err(|e| Denial::Internal(e.to_string()))?
        .map_err(Denial::from)
}

/// A push into a namespace that does not exist creates it (and an organization of that name)
/// when the caller is a server admin; anyone else gets `NAME_UNKNOWN`.
async fn ensure_namespace(
    state: &AppState,
    caller: &Caller,
    repo: &RepositoryName,
) -> Result<(), Denial> {
    // A principal other than an admin was only allowed the push because the namespace exists
    // (policy grants nothing in a missing one): nothing to read or create.
    if let Caller::Principal(p, _) = caller
        && !matches!(p, Principal::User { admin: true, .. })
    {
        return Ok(());
    }
    let ns = policy::namespace_of(repo.as_str()).to_owned();
    let sub = match caller {
        Caller::Token(c) => Some(c.clone()),
        Caller::Principal(..) => None,
    };
    let admin_principal = matches!(
        caller,
        Caller::Principal(Principal::User { admin: true, .. }, _)
    );
    blocking(state, move |st| {
        let iam = st.auth.iam();
        if iam.namespace(&ns)?.is_some() {
            return Ok(true);
        }
        let admin = admin_principal
            || match sub {
                Some(claims) => matches!(
                    st.auth.login_from_claims(&claims)?.map(|l| l.principal),
                    Some(Principal::User { admin: true, .. })
                ),
                None => false,
            };
        if !admin {
            return Ok(false);
        }
        let created = match iam.org(&ns) {
            Ok(_) => iam.create_namespace(&ns, &ns, false, &[]).map(|_| ()),
            Err(crate::iam::Error::NotFound(_)) => iam.create_org(&ns, None).map(|_| ()),
            Err(e) => Err(e),
        };
        match created {
            Ok(()) | Err(crate::iam::Error::Conflict(_)) => Ok(true),
            Err(crate::iam::Error::Invalid(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    })
    .await
    .and_then(|ok| if ok { Ok(()) } else { Err(Denial::NameUnknown) })
}

/// The client's address (for per-address limits) and what closes its connection.
fn client(parts: &axum::http::request::Parts) -> crate::content::Client {
    crate::content::Client::new(
        parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip()),
        parts.extensions.get::<crate::types::Hangup>().cloned(),
    )
}

async fn dispatch(
    state: &AppState,
    caller: &Caller,
    route: OciRoute,
    q: &Query,
    headers: &HeaderMap,
    client: crate::content::Client,
    body: Body,
) -> Result<Response, OciError> {
    let content = &state.content;
    match route {
        OciRoute::Base => Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/json")],
            "{}",
        )
            .into_response()),
        OciRoute::Catalog => listing::catalog(state, caller, q).await,
        OciRoute::ListTags { name } => listing::tags(content, &name, q),
        OciRoute::Referrers { name, digest } => listing::referrers(content, &name, &digest, q),
        OciRoute::GetManifest {
            name,
            reference,
            head,
        } => manifests::get(content, &name, &reference, head, headers),
        OciRoute::PutManifest { name, reference } => {
            manifests::put(content, &name, &reference, headers, body).await
        }
        OciRoute::DeleteManifest { name, reference } => {
            manifests::delete(content, &name, &reference).await
        }
        OciRoute::GetBlob { name, digest, head } => {
            blobs::get(content, &name, &digest, head, headers, client).await
        }
        OciRoute::DeleteBlob { name, digest } => blobs::delete(content, &name, &digest).await,
        OciRoute::StartUpload { name } => {
            let may_pull_from = |from: RepositoryName| async move {
                actions_on(state, caller, &from)
                    .await
                    .is_ok_and(|a| a.contains(Action::Pull))
            };
            uploads::start(
                content,
                &name,
                q,
                headers,
                client.peer(),
                body,
                may_pull_from,
            )
            .await
        }
        OciRoute::UploadStatus { name, id } => uploads::status(content, &name, &id),
        OciRoute::PatchUpload { name, id } => {
            uploads::patch(content, &name, &id, headers, client.peer(), body).await
        }
        OciRoute::PutUpload { name, id } => {
            uploads::put(content, &name, &id, q, headers, client.peer(), body).await
        }
        OciRoute::CancelUpload { name, id } => uploads::cancel(content, &name, &id).await,
    }
}
