//! Roles and bindings as declarative objects (`PUT` creates or replaces, so that `apply` works),
//! the access review ("can i"), and the audit trail.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::common::{ApiCaller, ApiError, ApiResult, blocking, json_response, parse_body, time};
use super::identity::audit_change;
use crate::auth::Principal;
use crate::iam::{Binding, Org};
use crate::policy::{self, BindingScope, Rule};
use crate::state::AppState;
use crate::store::AuditFilter;

#[derive(Deserialize)]
struct RoleBody {
    rules: Vec<Rule>,
}

fn role_json(org: &str, name: &str, rules: &[Rule], builtin: bool) -> serde_json::Value {
    json!({ "kind": "Role", "org": org, "name": name, "rules": rules, "builtin": builtin })
}

pub(super) async fn list_roles(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "roles", "list", "")?;
    blocking(&state, move |st| {
        let roles: Vec<_> = st
            .auth
            .iam()
            .roles(&org)?
            .iter()
            .map(|(n, r, b)| role_json(&org, n, r, *b))
            .collect();
        Ok(json_response(StatusCode::OK, json!({ "roles": roles })))
    })
    .await
}

pub(super) async fn get_role(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "roles", "get", &name)?;
    blocking(&state, move |st| {
        let found = st
            .auth
            .iam()
            .roles(&org)?
            .into_iter()
            .find(|(n, ..)| *n == name);
        let (n, rules, builtin) =
            found.ok_or_else(|| ApiError::NotFound(format!("role {name:?} not found")))?;
        Ok(json_response(
            StatusCode::OK,
            role_json(&org, &n, &rules, builtin),
        ))
    })
    .await
}

pub(super) async fn put_role(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_manage(&org, "roles", "update", &name)?;
    let body: RoleBody = parse_body(&body)?;
    // A role's rules apply wherever it is bound: the caller must hold them all org-wide, and
    // also the rules it replaces (replacing them takes access away from whoever is bound).
    caller.require_holds(&org, &BindingScope::Org, &body.rules)?;
    blocking(&state, move |st| {
        require_holds_role(st, &caller, &org, &name)?;
        let replaced =
            st.auth
                .iam()
                .put_role(&org, &name, &body.rules, &caller.provenance_in(st, &org)?)?;
        audit_change(st, &caller, "role.put", format!("org/{org}/roles/{name}"));
        let status = if replaced {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        };
        Ok(json_response(
            status,
            role_json(&org, &name, &body.rules, false),
        ))
    })
    .await
}

pub(super) async fn delete_role(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "roles", "delete", &name)?;
    blocking(&state, move |st| {
        require_holds_role(st, &caller, &org, &name)?;
        st.auth.iam().delete_role(&org, &name)?;
        audit_change(
            st,
            &caller,
            "role.delete",
            format!("org/{org}/roles/{name}"),
        );
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// A binding: `{"role", "subject": "robot/NAME" | "user/NAME", "namespace"?, "repository"?}`;
/// neither scope field means the whole organization.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BindingBody {
    role: String,
    subject: String,
    namespace: Option<String>,
    repository: Option<String>,
}

fn binding_json(st: &AppState, b: &Binding) -> serde_json::Value {
    let subject = st.auth.iam().subject_name(b.subject).ok().flatten();
    let mut v = json!({ "kind": "Binding", "org": b.org, "name": b.name, "role": b.role, "subject": subject });
    match &b.scope {
        BindingScope::Namespace(ns) => v["namespace"] = json!(ns),
        BindingScope::Repository(glob) => v["repository"] = json!(glob),
        BindingScope::Org => {}
    }
    v
}

/// A custom role may be replaced or deleted only by a caller who holds all its rules org-wide.
fn require_holds_role(st: &AppState, caller: &ApiCaller, org: &str, name: &str) -> ApiResult<()> {
    let org_row = st.auth.iam().org(org)?;
    match st.auth.iam().role_rules(org_row.id, name)? {
        Some(rules) if !policy::BUILTIN_ROLES.contains(&name) => {
            caller.require_holds(org, &BindingScope::Org, &rules)
        }
        _ => Ok(()),
    }
}

/// An existing binding may be replaced or deleted only by a caller who holds everything it
/// grants (so nobody takes away access they could not have given).
fn require_holds_binding(
    st: &AppState,
    caller: &ApiCaller,
    org: &Org,
    name: &str,
) -> ApiResult<()> {
    let Some(b) = st.auth.iam().binding(org.id, name)? else {
        return Ok(());
    };
    let rules = st
        .auth
        .iam()
        .role_rules(org.id, &b.role)?
        .unwrap_or_default();
    caller.require_holds(&org.name, &b.scope, &rules)
}

pub(super) async fn list_bindings(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "bindings", "list", "")?;
    blocking(&state, move |st| {
        let list: Vec<_> = st
            .auth
            .iam()
            .bindings(&org)?
            .iter()
            .map(|b| binding_json(st, b))
            .collect();
        Ok(json_response(StatusCode::OK, json!({ "bindings": list })))
    })
    .await
}

pub(super) async fn get_binding(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "bindings", "get", &name)?;
    blocking(&state, move |st| {
        let b = st
            .auth
            .iam()
            .bindings(&org)?
            .into_iter()
            .find(|b| b.name == name);
        let b = b.ok_or_else(|| ApiError::NotFound(format!("binding {name:?} not found")))?;
        Ok(json_response(StatusCode::OK, binding_json(st, &b)))
    })
    .await
}

pub(super) async fn put_binding(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, name)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_manage(&org, "bindings", "update", &name)?;
    let body: BindingBody = parse_body(&body)?;
    let scope = match (body.namespace, body.repository) {
        (None, None) => BindingScope::Org,
        (Some(ns), None) => BindingScope::Namespace(ns),
        (None, Some(glob)) => BindingScope::Repository(glob),
        (Some(_), Some(_)) => {
            return Err(ApiError::Invalid(
                "give namespace or repository, not both".into(),
            ));
        }
    };
    blocking(&state, move |st| {
        // No escalation: what the binding would grant, and what the binding it replaces grants
        // (replacing it takes that away from someone), must both be held by the caller.
        let org_row = st.auth.iam().org(&org)?;
        let rules = st
            .auth
            .iam()
            .role_rules(org_row.id, &body.role)?
            .ok_or_else(|| {
                ApiError::NotFound(format!(
                    "role {:?} not found in organization {org:?}",
                    body.role
                ))
            })?;
        caller.require_holds(&org, &scope, &rules)?;
        require_holds_binding(st, &caller, &org_row, &name)?;
        let replaced = st.auth.iam().put_binding(
            &org,
            &name,
            &body.role,
            &body.subject,
            &scope,
            &caller.provenance_in(st, &org)?,
        )?;
        audit_change(
            st,
            &caller,
            "binding.put",
            format!("org/{org}/bindings/{name}"),
        );
        let b = st
            .auth
            .iam()
            .bindings(&org)?
            .into_iter()
            .find(|b| b.name == name);
        let b = b.ok_or_else(|| ApiError::Internal("binding vanished".into()))?;
        Ok(json_response(
            if replaced {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            },
            binding_json(st, &b),
        ))
    })
    .await
}

pub(super) async fn delete_binding(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, name)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "bindings", "delete", &name)?;
    blocking(&state, move |st| {
        require_holds_binding(st, &caller, &st.auth.iam().org(&org)?, &name)?;
        st.auth.iam().delete_binding(&org, &name)?;
        audit_change(
            st,
            &caller,
            "binding.delete",
            format!("org/{org}/bindings/{name}"),
        );
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `{"subject"?: "robot/NAME" | "user/NAME", "verb", "resource": "repositories", "name"}`;
/// without a subject, the caller asks about itself.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReviewBody {
    subject: Option<String>,
    verb: String,
    #[serde(default = "repositories")]
    resource: String,
    #[serde(default)]
    name: String,
}

fn repositories() -> String {
    "repositories".into()
}

pub(super) async fn review(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: ReviewBody = parse_body(&body)?;
    if body.subject.is_some() {
        caller.require_manage(&org, "bindings", "get", "")?;
    }
    blocking(&state, move |st| {
        let iam = st.auth.iam();
        let grants = match body.subject.as_deref() {
            None => caller.grants.clone(),
            Some(s) => {
                // An unknown subject is answered like a known one without access, so the review
                // is no oracle of which users or robots exist.
                let found = |r: crate::iam::Result<Principal>| match r {
                    Ok(p) => Ok(p),
                    Err(crate::iam::Error::NotFound(_)) => Ok(Principal::Anonymous),
                    Err(e) => Err(ApiError::from(e)),
                };
                if let Some(("group", name)) = s.split_once('/') {
                    crate::iam::check_group_name(name)?;
                    let g = iam.group_grants(name)?;
                    let g = if caller.grants.admin {
                        g
                    } else {
                        policy::within_org(&g, &org)
                    };
                    return review_answer(st, &org, &body, &g);
                }
                let principal = match s.split_once('/') {
                    Some(("user", u)) => found(iam.user(u).map(|u| Principal::User {
                        id: u.id,
                        name: u.name,
                        admin: u.admin,
                    }))?,
                    Some(("robot", r)) => found(iam.robot(&org, r).map(|r| Principal::Robot {
                        id: r.id,
                        org: r.org,
                        name: r.name,
                    }))?,
                    _ => {
                        return Err(ApiError::Invalid(format!(
                            "subject must be user/NAME, robot/NAME or group/NAME, not {s:?}"
                        )));
                    }
                };
                let g = st.auth.grants(&principal)?;
                // Only a server admin learns what lies beyond this org (the admin bit included).
                if caller.grants.admin {
                    g
                } else {
                    policy::within_org(&g, &org)
                }
            }
        };
        review_answer(st, &org, &body, &grants)
    })
    .await
}

/// Whether `grants` allow the review's verb on its resource in `org`.
fn review_answer(
    st: &AppState,
    org: &str,
    body: &ReviewBody,
    grants: &policy::Grants,
) -> ApiResult<Response> {
    let allowed = if body.resource == "repositories" {
        let action = policy::Action::parse(&body.verb).ok_or_else(|| {
            ApiError::Invalid(format!("verb {:?} is not pull, push or delete", body.verb))
        })?;
        let ns = crate::http::access::namespace_info(st, policy::namespace_of(&body.name))?;
        let in_org = ns.as_ref().is_some_and(|n| n.org == org);
        in_org && policy::repository_actions(grants, &body.name, ns.as_ref()).contains(action)
    } else {
        policy::may_manage(grants, org, &body.resource, &body.verb, &body.name)
    };
    Ok(json_response(StatusCode::OK, json!({ "allowed": allowed })))
}

/// Audit events, newest first. Server admins see all; anyone else only their own.
pub(super) async fn audit(
    State(state): State<AppState>,
    caller: ApiCaller,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let mut filter = audit_filter(&q)?;
    if !caller.grants.admin {
        let own = caller.subject();
        if filter.actor.as_ref().is_some_and(|a| *a != own) {
            return Err(ApiError::Forbidden(
                "only server admins see other actors' events".into(),
            ));
        }
        filter.actor = Some(own);
    }
    audit_answer(&state, filter).await
}

/// An organization's audit events, newest first: what happened to it and in it, by anyone
/// (its robots, its members, the admins). For its owners and a role that grants `list` on
/// `audit`; the same filters as `/audit`.
pub(super) async fn org_audit(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "audit", "list", "")?;
    let mut filter = audit_filter(&q)?;
    filter.org = Some(org);
    audit_answer(&state, filter).await
}

fn audit_filter(q: &HashMap<String, String>) -> ApiResult<AuditFilter> {
    let since = q.get("since").map(|s| parse_since(s)).transpose()?;
    let until = q.get("until").map(|s| parse_since(s)).transpose()?;
    let number = |k: &str| -> ApiResult<Option<i64>> {
        q.get(k)
            .map(|v| {
                v.parse()
                    .map_err(|_| ApiError::Invalid(format!("{k} must be a number")))
            })
            .transpose()
    };
    Ok(AuditFilter {
        actor: q.get("actor").cloned(),
        action: q.get("action").cloned(),
        outcome: q.get("outcome").cloned(),
        since,
        until,
        before_id: number("before")?,
        limit: number("limit")?.map_or(100, |l| u64::try_from(l.clamp(1, 1000)).unwrap_or(100)),
        org: None,
    })
}

async fn audit_answer(state: &AppState, filter: AuditFilter) -> ApiResult<Response> {
    blocking(state, move |st| {
        st.auth.flush_usage()?;
        let events = st.auth.iam().audit_events(&filter)?;
        let next = (events.len() as u64 == filter.limit).then(|| events.last().map(|e| e.id)).flatten();
        let list: Vec<_> = events
            .iter()
            .map(|e| {
                json!({
                    "id": e.id, "time": time(Some(e.at)), "actor": e.actor, "action": e.action,
                    "outcome": e.outcome, "target": e.target, "clientAddress": e.client_addr, "detail": e.detail,
                    "attempted": e.attempted, "count": e.count, "org": e.org,
                })
            })
            .collect();
        Ok(json_response(StatusCode::OK, json!({ "events": list, "next": next })))
    })
    .await
}

/// `since` or `until` as Unix seconds, RFC 3339 (`2026-12-01T10:00:00Z`) or a duration back
/// from now (`15m`, `24h`).
fn parse_since(s: &str) -> ApiResult<i64> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs);
    }
    if let Some(t) = crate::auth::token::parse_rfc3339(s) {
        return Ok(t);
    }
    let d = crate::config::parse_duration(s).map_err(|_| {
        ApiError::Invalid(format!(
            "{s:?}: expected Unix seconds, an RFC 3339 time or a duration back from now (24h)"
        ))
    })?;
    Ok(crate::store::now() - i64::try_from(d.as_secs()).unwrap_or(0))
}
