//! Users (server admins manage them), organizations, members and namespaces.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::common::{ApiCaller, ApiError, ApiResult, blocking, json_response, parse_body, time};
use crate::auth::Principal;
use crate::iam::AuditEvent;
use crate::iam::{Namespace, Org, User};
use crate::state::AppState;

fn user_json(u: &User) -> serde_json::Value {
    json!({ "name": u.name, "admin": u.admin, "created": time(Some(u.created_at)) })
}

fn org_json(o: &Org) -> serde_json::Value {
    json!({ "name": o.name, "created": time(Some(o.created_at)) })
}

fn ns_json(n: &Namespace) -> serde_json::Value {
    json!({ "name": n.name, "org": n.org, "public": n.public, "created": time(Some(n.created_at)) })
}

/// Records a successful change made through the API.
pub(super) fn audit_change(
    st: &AppState,
    caller: &ApiCaller,
    action: &'static str,
    target: String,
) {
    let org = org_of_target(st, &target);
    audit_change_in(st, caller, org, action, target);
}

/// The organization a change's target belongs to: `org/ORG/…`, `robot/ORG/…`, or a namespace's
/// owner; `None` for users and their own sessions and keys.
fn org_of_target(st: &AppState, target: &str) -> Option<String> {
    let mut parts = target.split('/');
    match (parts.next(), parts.next()) {
        (Some("org" | "robot"), Some(org)) => org.split_whitespace().next().map(str::to_owned),
        (Some("namespace"), Some(ns)) => {
            let ns = ns.split_whitespace().next()?;
            st.auth.iam().namespace(ns).ok().flatten().map(|n| n.org)
        }
        _ => None,
    }
}

/// Records a change in organization `org` (its owners read it in the org's audit).
pub(super) fn audit_change_in(
    st: &AppState,
    caller: &ApiCaller,
    org: Option<String>,
    action: &'static str,
    target: String,
) {
    st.auth.audit(AuditEvent {
        org,
        actor: Some(caller.subject()),
        action,
        success: true,
        target: Some(target),
        client_addr: caller.client.addr.map(|a| a.to_string()),
        ..AuditEvent::default()
    });
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewUser {
    name: String,
    password: Option<String>,
    #[serde(default)]
    admin: bool,
}

pub(super) async fn list_users(
    State(state): State<AppState>,
    caller: ApiCaller,
) -> ApiResult<Response> {
    caller.require_admin()?;
    blocking(&state, |st| {
        // Where each user comes from: `local` (a password set here) or a provider's name.
        let sources = st.auth.iam().sso().sources()?;
        let users: Vec<_> = st
            .auth
            .iam()
            .users()?
            .iter()
            .map(|u| {
                let mut v = user_json(u);
                v["source"] = sources.get(&u.id).map_or("local", String::as_str).into();
                v
            })
            .collect();
        Ok(json_response(StatusCode::OK, json!({ "users": users })))
    })
    .await
}

pub(super) async fn create_user(
    State(state): State<AppState>,
    caller: ApiCaller,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_admin()?;
    let body: NewUser = parse_body(&body)?;
    blocking(&state, move |st| {
        let u = st.auth.iam().create_user(
            &body.name,
            body.password.as_deref(),
            body.admin,
            &caller.provenance(),
        )?;
        audit_change(st, &caller, "user.create", format!("user/{}", u.name));
        Ok(json_response(StatusCode::CREATED, user_json(&u)))
    })
    .await
}

pub(super) async fn get_user(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    let own = matches!(&caller.principal, Principal::User { name, .. } if *name == user);
    if !own {
        caller.require_admin()?;
    }
    blocking(&state, move |st| {
        Ok(json_response(
            StatusCode::OK,
            user_json(&st.auth.iam().user(&user)?),
        ))
    })
    .await
}

pub(super) async fn delete_user(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(user): Path<String>,
) -> ApiResult<Response> {
    caller.require_admin()?;
    blocking(&state, move |st| {
        st.auth.iam().delete_user(&user)?;
        audit_change(st, &caller, "user.delete", format!("user/{user}"));
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewPassword {
    password: String,
    /// Required when users change their own password (server admins setting another user's
    /// password do not need it).
    #[serde(default, alias = "current_password")]
    current_password: Option<String>,
}

pub(super) async fn set_password(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(user): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let own = matches!(&caller.principal, Principal::User { name, .. } if *name == user);
    if !own {
        caller.require_admin()?;
    }
    let body: NewPassword = parse_body(&body)?;
    crate::iam::password::check_policy(&body.password).map_err(ApiError::Invalid)?;
    blocking(&state, move |st| {
        if own {
            // Whoever holds a session or key of this user must still prove the password: the
            // check counts against the failure limits like any login.
            let current = body.current_password.as_deref().ok_or_else(|| {
                ApiError::Invalid("changing your own password needs currentPassword".into())
            })?;
            let login = st
                .auth
                .login(&user, current, &caller.client)
                .map_err(|e| match e {
                    crate::auth::AuthError::Invalid => {
                        ApiError::Forbidden("the current password is wrong".into())
                    }
                    e => e.into(),
                })?;
            if !login.lineage.password_backed() {
                return Err(ApiError::Forbidden("the current password is wrong".into()));
            }
        }
        st.auth
            .iam()
            .set_password(&user, &body.password, &caller.provenance())?;
        audit_change(st, &caller, "user.password", format!("user/{user}"));
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    name: String,
}

pub(super) async fn list_orgs(
    State(state): State<AppState>,
    caller: ApiCaller,
) -> ApiResult<Response> {
    blocking(&state, move |st| {
        let orgs: Vec<_> = st
            .auth
            .iam()
            .orgs()?
            .iter()
            .filter(|o| caller.in_org(&o.name))
            .map(org_json)
            .collect();
        Ok(json_response(StatusCode::OK, json!({ "orgs": orgs })))
    })
    .await
}

/// Any user may create an organization and becomes its owner.
pub(super) async fn create_org(
    State(state): State<AppState>,
    caller: ApiCaller,
    body: Bytes,
) -> ApiResult<Response> {
    let Principal::User { id, .. } = caller.principal else {
        return Err(ApiError::Forbidden(
            "only users create organizations".into(),
        ));
    };
    let body: NewOrg = parse_body(&body)?;
    blocking(&state, move |st| {
        let org = st.auth.iam().create_org(&body.name, Some(id))?;
        audit_change(st, &caller, "org.create", format!("org/{}", org.name));
        Ok(json_response(StatusCode::CREATED, org_json(&org)))
    })
    .await
}

pub(super) async fn get_org(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
) -> ApiResult<Response> {
    blocking(&state, move |st| {
        let row = st.auth.iam().org(&org)?;
        if !caller.in_org(&org) {
            return Err(ApiError::from(crate::iam::org_not_found(&org)));
        }
        let namespaces: Vec<_> = st
            .auth
            .iam()
            .namespaces(&org)?
            .iter()
            .filter(|n| crate::policy::sees_namespace(&caller.grants, &org, &n.name))
            .map(ns_json)
            .collect();
        let mut v = org_json(&row);
        v["namespaces"] = json!(namespaces);
        Ok(json_response(StatusCode::OK, v))
    })
    .await
}

pub(super) async fn delete_org(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
) -> ApiResult<Response> {
    caller.require_owner(&org)?;
    blocking(&state, move |st| {
        st.auth.iam().delete_org(&org)?;
        audit_change(st, &caller, "org.delete", format!("org/{org}"));
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

pub(super) async fn list_members(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
) -> ApiResult<Response> {
    if !caller.in_org(&org) {
        return Err(ApiError::from(crate::iam::org_not_found(&org)));
    }
    // The member list is the org's people: not for a subject scoped to some namespaces.
    if !crate::policy::sees_whole_org(&caller.grants, &org) {
        return Err(ApiError::Forbidden(format!(
            "only members and subjects bound to the whole of {org:?} may list its members"
        )));
    }
    blocking(&state, move |st| {
        let members: Vec<_> = st
            .auth
            .iam()
            .members(&org)?
            .iter()
            .map(|(u, role)| json!({ "user": u.name, "role": role }))
            .collect();
        Ok(json_response(StatusCode::OK, json!({ "members": members })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Membership {
    role: String,
}

pub(super) async fn set_member(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, user)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_owner(&org)?;
    let body: Membership = parse_body(&body)?;
    blocking(&state, move |st| {
        // A server admin (who may list users anyway) adds directly; an owner invites.
        let change = st.auth.iam().set_member(
            &org,
            &user,
            &body.role,
            &caller.provenance_in(st, &org)?,
            caller.grants.admin,
        )?;
        let (action, status, v) = match change {
            crate::iam::MemberChange::Set => (
                "member.set",
                StatusCode::OK,
                json!({ "user": user, "role": body.role, "status": "member" }),
            ),
            crate::iam::MemberChange::Invited => (
                "member.invite",
                StatusCode::ACCEPTED,
                json!({ "user": user, "role": body.role, "status": "invited" }),
            ),
        };
        audit_change(st, &caller, action, format!("org/{org}/members/{user}"));
        Ok(json_response(status, v))
    })
    .await
}

/// The caller's invitations: organizations it may join, with the role offered.
pub(super) async fn list_invitations(
    State(state): State<AppState>,
    caller: ApiCaller,
) -> ApiResult<Response> {
    let Principal::User { id, .. } = caller.principal else {
        return Err(ApiError::Forbidden("only users are invited".into()));
    };
    blocking(&state, move |st| {
        let list: Vec<_> = st
            .auth
            .iam()
            .invitations(id)?
            .into_iter()
            .map(|(org, role)| json!({ "org": org, "role": role }))
            .collect();
        Ok(json_response(
            StatusCode::OK,
            json!({ "invitations": list }),
        ))
    })
    .await
}

/// The caller accepts its invitation to `org` and joins it.
pub(super) async fn accept_invitation(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
) -> ApiResult<Response> {
    let Principal::User { id, name, .. } = caller.principal.clone() else {
        return Err(ApiError::Forbidden("only users are invited".into()));
    };
    blocking(&state, move |st| {
        let role = st.auth.iam().accept_invitation(&org, id)?;
        audit_change(
            st,
            &caller,
            "member.accept",
            format!("org/{org}/members/{name}"),
        );
        Ok(json_response(
            StatusCode::OK,
            json!({ "user": name, "role": role, "status": "member" }),
        ))
    })
    .await
}

pub(super) async fn remove_member(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, user)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_owner(&org)?;
    blocking(&state, move |st| {
        st.auth.iam().remove_member(&org, &user)?;
        audit_change(
            st,
            &caller,
            "member.remove",
            format!("org/{org}/members/{user}"),
        );
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewNamespace {
    name: String,
    #[serde(default)]
    public: bool,
}

pub(super) async fn list_namespaces(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
) -> ApiResult<Response> {
    if !caller.in_org(&org) {
        return Err(ApiError::from(crate::iam::org_not_found(&org)));
    }
    blocking(&state, move |st| {
        let list: Vec<_> = st
            .auth
            .iam()
            .namespaces(&org)?
            .iter()
            .filter(|n| crate::policy::sees_namespace(&caller.grants, &org, &n.name))
            .map(ns_json)
            .collect();
        Ok(json_response(StatusCode::OK, json!({ "namespaces": list })))
    })
    .await
}

pub(super) async fn create_namespace(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_owner(&org)?;
    let body: NewNamespace = parse_body(&body)?;
    blocking(&state, move |st| {
        let ns = st.auth.iam().create_namespace(
            &org,
            &body.name,
            body.public,
            &caller.provenance_in(st, &org)?,
        )?;
        audit_change(
            st,
            &caller,
            "namespace.create",
            format!("namespace/{}", ns.name),
        );
        Ok(json_response(StatusCode::CREATED, ns_json(&ns)))
    })
    .await
}

fn namespace_owned(st: &AppState, caller: &ApiCaller, ns: &str) -> ApiResult<Namespace> {
    let row = st
        .auth
        .iam()
        .namespace(ns)?
        .ok_or_else(|| ApiError::NotFound(format!("namespace {ns:?} not found")))?;
    if !caller.in_org(&row.org) {
        return Err(ApiError::NotFound(format!("namespace {ns:?} not found")));
    }
    Ok(row)
}

pub(super) async fn get_namespace(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(ns): Path<String>,
) -> ApiResult<Response> {
    blocking(&state, move |st| {
        Ok(json_response(
            StatusCode::OK,
            ns_json(&namespace_owned(st, &caller, &ns)?),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamespacePatch {
    public: bool,
}

pub(super) async fn patch_namespace(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(ns): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: NamespacePatch = parse_body(&body)?;
    blocking(&state, move |st| {
        let row = namespace_owned(st, &caller, &ns)?;
        caller.require_owner(&row.org)?;
        st.auth.iam().set_namespace_public(
            &ns,
            body.public,
            &caller.provenance_in(st, &row.org)?,
        )?;
        audit_change(st, &caller, "namespace.update", format!("namespace/{ns}"));
        let row = namespace_owned(st, &caller, &ns)?;
        Ok(json_response(StatusCode::OK, ns_json(&row)))
    })
    .await
}

pub(super) async fn delete_namespace(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(ns): Path<String>,
) -> ApiResult<Response> {
    blocking(&state, move |st| {
        let row = namespace_owned(st, &caller, &ns)?;
        caller.require_owner(&row.org)?;
        // An organization's own namespace stays reserved for it: it goes only with the org.
        if row.name == row.org {
            return Err(ApiError::Conflict(format!(
                "namespace {ns:?} is organization {:?}'s own; it is deleted with the organization",
                row.org
            )));
        }
        st.auth.iam().delete_namespace(&ns)?;
        audit_change_in(
            st,
            &caller,
            Some(row.org.clone()),
            "namespace.delete",
            format!("namespace/{ns}"),
        );
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}
