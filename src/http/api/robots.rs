//! Robots and every long-lived credential: robot tokens, API keys (of the caller or of a robot)
//! and registry tokens (`POST /api/v1/tokens?permanent=true` with an `Organization` header, as
//! in seed 002). Secrets appear only in the `201` answer that creates them.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::common::{ApiCaller, ApiError, ApiResult, blocking, json_response, parse_body, time};
use super::identity::audit_change;
use crate::auth::Principal;
use crate::config::parse_duration;
use crate::iam::{Credential, Robot};
use crate::iam::{CredentialSpec, NewCredential, Owner, SecretKind};
use crate::state::AppState;

fn robot_json(r: &Robot) -> serde_json::Value {
    json!({ "org": r.org, "name": r.name, "description": r.description, "created": time(Some(r.created_at)) })
}

/// A credential without its secret.
fn credential_json(c: &Credential) -> serde_json::Value {
    json!({
        "status": c.status(crate::store::now()),
        "id": c.id,
        "name": c.name,
        "description": c.description,
        "readwrite": c.readwrite,
        "created": time(Some(c.created_at)),
        "expires": time(c.expires_at),
        "revoked": c.revoked_at.is_some(),
        "lastUsed": c.last_used_at.map(|at| json!({
            "at": time(Some(at)), "address": c.last_used_addr, "userAgent": c.last_used_agent,
        })),
    })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NewNamed {
    name: Option<String>,
    description: Option<String>,
    /// `90d`, `24h`…; absent means the credential does not expire.
    expires_in: Option<String>,
    /// The caller's current password: a fresh proof for a credential that never expires made
    /// through a session (`ApiCaller::require_fresh_proof`).
    password: Option<String>,
}

/// The shortest and longest `expiresIn` a credential may ask for.
/// (Expiries are kept in whole seconds; the longest keeps the year within four digits.)
const MIN_EXPIRY: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_EXPIRY: std::time::Duration = std::time::Duration::from_secs(1_000_000 * 86_400);

fn expiry(v: Option<&str>) -> ApiResult<Option<std::time::Duration>> {
    match v
        .map(parse_duration)
        .transpose()
        .map_err(ApiError::Invalid)?
    {
        // A credential that expires as it is made is a mistake, not a request; one that outlives
        // every calendar is one too (and its expiry must print as an RFC 3339 date).
        Some(d) if d < MIN_EXPIRY => Err(ApiError::Invalid(
            "expiresIn must be longer than 0: at least 1s (leave it out for the default)".into(),
        )),
        Some(d) if d > MAX_EXPIRY => Err(ApiError::Invalid(
            "expiresIn must be at most 1000000d; for no expiry leave it out with permanent".into(),
        )),
        d => Ok(d),
    }
}

/// Parses an optional JSON body (empty means defaults).
fn optional_body<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_body(body)
    }
}

pub(super) async fn list_robots(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "robots", "list", "")?;
    blocking(&state, move |st| {
        let robots: Vec<_> = st.auth.iam().robots(&org)?.iter().map(robot_json).collect();
        Ok(json_response(StatusCode::OK, json!({ "robots": robots })))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRobot {
    name: String,
    description: Option<String>,
}

pub(super) async fn create_robot(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let body: NewRobot = parse_body(&body)?;
    caller.require_manage(&org, "robots", "create", &body.name)?;
    blocking(&state, move |st| {
        let robot = st.auth.iam().create_robot(
            &org,
            &body.name,
            body.description.as_deref(),
            &caller.provenance_in(st, &org)?,
        )?;
        audit_change(
            st,
            &caller,
            "robot.create",
            format!("robot/{org}/{}", robot.name),
        );
        Ok(json_response(StatusCode::CREATED, robot_json(&robot)))
    })
    .await
}

pub(super) async fn get_robot(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "robots", "get", &robot)?;
    blocking(&state, move |st| {
        let r = st.auth.iam().robot(&org, &robot)?;
        let mut v = robot_json(&r);
        let trusts = st.auth.iam().trusts(r.id)?;
        v["trusts"] = json!(trusts.iter().map(trust_json).collect::<Vec<_>>());
        Ok(json_response(StatusCode::OK, v))
    })
    .await
}

pub(super) async fn delete_robot(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "robots", "delete", &robot)?;
    blocking(&state, move |st| {
        robot_within_reach(st, &caller, &org, &robot)?;
        st.auth.iam().delete_robot(&org, &robot)?;
        // This node stops honouring the robot at once; the others within a second.
        st.auth.refresh_revocations()?;
        audit_change(st, &caller, "robot.delete", format!("robot/{org}/{robot}"));
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

/// `{"<field>": [credentials without secrets]}` of one owner and kind.
fn list_of(st: &AppState, owner: Owner, kind: SecretKind, field: &str) -> ApiResult<Response> {
    let list: Vec<_> = st
        .auth
        .iam()
        .credentials(owner, kind)?
        .iter()
        .map(credential_json)
        .collect();
    Ok(json_response(StatusCode::OK, json!({ field: list })))
}

/// The `201` answer of a new credential: its metadata plus the secret, once.
fn created(new: &NewCredential, secret_field: &str) -> Response {
    let mut v = credential_json(&new.credential);
    v[secret_field] = json!(new.secret.expose());
    json_response(StatusCode::CREATED, v)
}

pub(super) async fn list_robot_tokens(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "credentials", "list", &robot)?;
    blocking(&state, move |st| {
        let r = st.auth.iam().robot(&org, &robot)?;
        list_of(st, Owner::Robot(r.id), SecretKind::RobotToken, "tokens")
    })
    .await
}

/// Answers `{"accessId", "token"}` (seed 000's token file) plus id, name and expiry.
pub(super) async fn create_robot_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_manage(&org, "credentials", "create", &robot)?;
    let body: NewNamed = optional_body(&body)?;
    let name = body
        .name
        .clone()
        .ok_or_else(|| ApiError::Invalid("a robot token needs a name".into()))?;
    crate::iam::check_name("token", &name)?;
    let ttl = expiry(body.expires_in.as_deref())?;
    blocking(&state, move |st| {
        caller.require_fresh_proof(st, ttl, body.password.as_deref())?;
        let r = robot_within_reach(st, &caller, &org, &robot)?;
        let new = st.auth.iam().create_credential(&CredentialSpec {
            kind: SecretKind::RobotToken,
            owner: Owner::Robot(r.id),
            name: Some(&name),
            expires_in: ttl,
            readwrite: false,
            description: body.description.as_deref(),
            origin: caller.origin_in(st, &org)?,
        })?;
        audit_change(
            st,
            &caller,
            "robot_token.create",
            format!("robot/{org}/{robot}/tokens/{}", new.credential.id),
        );
        let mut v = credential_json(&new.credential);
        v["accessId"] = json!(new.credential.id);
        v["token"] = json!(new.secret.expose());
        Ok(json_response(StatusCode::CREATED, v))
    })
    .await
}

/// The robot `org/robot`, if the caller holds all of its access (**no escalation**): needed to
/// mint a credential for it (a credential acts with all of the robot's access) and to delete it
/// or its credentials (nobody locks out an identity stronger than themselves).
fn robot_within_reach(
    st: &AppState,
    caller: &ApiCaller,
    org: &str,
    robot: &str,
) -> ApiResult<Robot> {
    let r = st.auth.iam().robot(org, robot)?;
    let robot_grants = st.auth.grants(&Principal::Robot {
        id: r.id,
        org: r.org.clone(),
        name: r.name.clone(),
    })?;
    if !crate::policy::may_grant_all(&caller.grants, org, &robot_grants) {
        return Err(ApiError::Forbidden(format!(
            "robot {robot:?} holds access you do not hold yourself in {org:?}; a credential for it would give you more"
        )));
    }
    Ok(r)
}

/// A credential of `owner` by id, or by name (unique per owner); an id of another owner is not
/// found.
fn find_owned(st: &AppState, owner: Owner, kind: SecretKind, id: &str) -> ApiResult<Credential> {
    let list = st.auth.iam().credentials(owner, kind)?;
    // A revoked one is a trace in the lists, nothing more.
    let mut found = list
        .into_iter()
        .filter(|c| c.revoked_at.is_none())
        .filter(|c| c.id == id || c.name.as_deref() == Some(id));
    match (found.next(), found.next()) {
        (Some(one), None) => Ok(one),
        (None, _) => Err(ApiError::NotFound(format!(
            "credential {id:?} not found (by name or id)"
        ))),
        (Some(_), Some(_)) => Err(ApiError::Conflict(format!(
            "several credentials are named {id:?}; give the id"
        ))),
    }
}

/// Deletes a credential of `owner` (and nothing else: an id of another owner is not found).
fn delete_owned(
    st: &AppState,
    caller: &ApiCaller,
    owner: Owner,
    kind: SecretKind,
    id: &str,
    target: String,
) -> ApiResult<Response> {
    let row = find_owned(st, owner, kind, id)?;
    st.auth.iam().revoke_credential(&row.id)?;
    audit_change(st, caller, "credential.delete", target);
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub(super) async fn delete_robot_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot, id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "credentials", "delete", &robot)?;
    blocking(&state, move |st| {
        let r = robot_within_reach(st, &caller, &org, &robot)?;
        delete_owned(
            st,
            &caller,
            Owner::Robot(r.id),
            SecretKind::RobotToken,
            &id,
            format!("robot/{org}/{robot}/tokens/{id}"),
        )
    })
    .await
}

pub(super) async fn list_robot_keys(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "credentials", "list", &robot)?;
    blocking(&state, move |st| {
        let r = st.auth.iam().robot(&org, &robot)?;
        list_of(st, Owner::Robot(r.id), SecretKind::ApiKey, "apikeys")
    })
    .await
}

pub(super) async fn create_robot_key(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_manage(&org, "credentials", "create", &robot)?;
    let body: NewNamed = optional_body(&body)?;
    let ttl = expiry(body.expires_in.as_deref())?;
    blocking(&state, move |st| {
        caller.require_fresh_proof(st, ttl, body.password.as_deref())?;
        let r = robot_within_reach(st, &caller, &org, &robot)?;
        let new = st.auth.iam().create_credential(&CredentialSpec {
            kind: SecretKind::ApiKey,
            owner: Owner::Robot(r.id),
            name: body.name.as_deref(),
            expires_in: ttl,
            readwrite: false,
            description: body.description.as_deref(),
            origin: caller.origin_in(st, &org)?,
        })?;
        audit_change(
            st,
            &caller,
            "apikey.create",
            format!("robot/{org}/{robot}/apikeys/{}", new.credential.id),
        );
        Ok(created(&new, "apikey"))
    })
    .await
}

pub(super) async fn delete_robot_key(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot, id)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "credentials", "delete", &robot)?;
    blocking(&state, move |st| {
        let r = robot_within_reach(st, &caller, &org, &robot)?;
        delete_owned(
            st,
            &caller,
            Owner::Robot(r.id),
            SecretKind::ApiKey,
            &id,
            format!("robot/{org}/{robot}/apikeys/{id}"),
        )
    })
    .await
}

fn own_user(caller: &ApiCaller) -> ApiResult<i64> {
    match &caller.principal {
        Principal::User { id, .. } => Ok(*id),
        _ => Err(ApiError::Forbidden(
            "only users have API keys of their own; robots' keys are made through the robot".into(),
        )),
    }
}

pub(super) async fn list_own_keys(
    State(state): State<AppState>,
    caller: ApiCaller,
) -> ApiResult<Response> {
    let id = own_user(&caller)?;
    blocking(&state, move |st| {
        list_of(st, Owner::User(id), SecretKind::ApiKey, "apikeys")
    })
    .await
}

pub(super) async fn create_own_key(
    State(state): State<AppState>,
    caller: ApiCaller,
    body: Bytes,
) -> ApiResult<Response> {
    let id = own_user(&caller)?;
    let body: NewNamed = optional_body(&body)?;
    let ttl = expiry(body.expires_in.as_deref())?;
    blocking(&state, move |st| {
        caller.require_fresh_proof(st, ttl, body.password.as_deref())?;
        let new = st.auth.iam().create_credential(&CredentialSpec {
            kind: SecretKind::ApiKey,
            owner: Owner::User(id),
            name: body.name.as_deref(),
            expires_in: ttl,
            readwrite: false,
            description: body.description.as_deref(),
            origin: caller.origin(),
        })?;
        audit_change(
            st,
            &caller,
            "apikey.create",
            format!("{}/apikeys/{}", caller.subject(), new.credential.id),
        );
        Ok(created(&new, "apikey"))
    })
    .await
}

pub(super) async fn delete_own_key(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(key): Path<String>,
) -> ApiResult<Response> {
    let id = own_user(&caller)?;
    blocking(&state, move |st| {
        let target = format!("{}/apikeys/{key}", caller.subject());
        delete_owned(
            st,
            &caller,
            Owner::User(id),
            SecretKind::ApiKey,
            &key,
            target,
        )
    })
    .await
}

/// The organization a registry-token request is about: the `Organization` header.
fn organization(headers: &HeaderMap) -> ApiResult<String> {
    headers
        .get("organization")
        .and_then(|v| v.to_str().ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| {
            ApiError::Invalid("the Organization header names the organization of the token".into())
        })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct NewRegistryToken {
    name: Option<String>,
    readwrite: Option<bool>,
    description: Option<String>,
    /// The caller's current password (`ApiCaller::require_fresh_proof`).
    password: Option<String>,
}

fn truthy(v: Option<&String>) -> Option<bool> {
    v.map(|s| s == "true" || s == "1" || s.is_empty())
}

/// Seed 002: `POST /api/v1/tokens?permanent=true` with `Authorization` and `Organization`
/// headers answers `201 {"token": …}`. `readwrite` and `description` come in the JSON body or the
/// query; read-only by default; without `permanent=true` the token expires.
pub(super) async fn create_registry_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
    body: Bytes,
) -> ApiResult<Response> {
    let org = organization(&headers)?;
    let body: NewRegistryToken = optional_body(&body)?;
    let readwrite = body
        .readwrite
        .or(truthy(q.get("readwrite")))
        .unwrap_or(false);
    let permanent = truthy(q.get("permanent")).unwrap_or(false);
    let description = body.description.or_else(|| q.get("description").cloned());
    let name = body.name.or_else(|| q.get("name").cloned());
    if let Some(n) = &name {
        crate::iam::check_name("token", n)?;
    }
    // A registry token is a long-lived credential of the organization: its creator must be
    // allowed to manage credentials there (Manager; a Reader or Writer mints nothing
    // long-lived), and it reaches every namespace, so the creator must hold that much already
    // (pull for read-only, push for read-write). A registry token cannot mint tokens.
    let need = if readwrite {
        crate::policy::Action::Push
    } else {
        crate::policy::Action::Pull
    };
    if matches!(caller.principal, Principal::RegistryToken { .. }) {
        return Err(ApiError::Forbidden(
            "a registry token cannot create registry tokens".into(),
        ));
    }
    caller.require_manage(&org, "credentials", "create", "registry-token")?;
    if !crate::policy::org_wide_actions(&caller.grants, &org).contains(need) {
        return Err(ApiError::Forbidden(format!(
            "a {} registry token for {org:?} needs {} access to the whole organization",
            if readwrite { "read-write" } else { "read-only" },
            need.as_str()
        )));
    }
    let ttl = (!permanent).then_some(state.web.registry_token_ttl);
    let password = body.password;
    blocking(&state, move |st| {
        caller.require_fresh_proof(st, ttl, password.as_deref())?;
        let org_row = st.auth.iam().org(&org)?;
        let new = st.auth.iam().create_credential(&CredentialSpec {
            kind: SecretKind::RegistryToken,
            owner: Owner::Org(org_row.id),
            name: name.as_deref(),
            expires_in: ttl,
            readwrite,
            description: description.as_deref(),
            origin: caller.origin_in(st, &org)?,
        })?;
        audit_change(
            st,
            &caller,
            "registry_token.create",
            format!("org/{org}/tokens/{}", new.credential.id),
        );
        Ok(created(&new, "token"))
    })
    .await
}

pub(super) async fn list_registry_tokens(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let org = organization(&headers)?;
    caller.require_manage(&org, "credentials", "list", "registry-token")?;
    blocking(&state, move |st| {
        let org_row = st.auth.iam().org(&org)?;
        list_of(
            st,
            Owner::Org(org_row.id),
            SecretKind::RegistryToken,
            "tokens",
        )
    })
    .await
}

pub(super) async fn delete_registry_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let org = organization(&headers)?;
    caller.require_manage(&org, "credentials", "delete", "registry-token")?;
    blocking(&state, move |st| {
        let org_row = st.auth.iam().org(&org)?;
        delete_owned(
            st,
            &caller,
            Owner::Org(org_row.id),
            SecretKind::RegistryToken,
            &id,
            format!("org/{org}/tokens/{id}"),
        )
    })
    .await
}

// ----- workload trusts -----

fn trust_json(t: &crate::iam::Trust) -> serde_json::Value {
    let claims = json!(t.claims);
    json!({
        "name": t.name,
        "issuer": t.issuer,
        "subject": t.subject,
        "audience": t.audience,
        "claims": claims,
        "jwks": t.jwks.is_some(),
        "created": time(Some(t.created_at)),
        "lastUsed": time(t.last_used_at),
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewTrust {
    name: String,
    issuer: String,
    subject: String,
    audience: Option<String>,
    #[serde(default)]
    claims: std::collections::BTreeMap<String, String>,
    /// The issuer's JSON Web Key Set (an object, or its JSON text): no discovery then.
    jwks: Option<serde_json::Value>,
}

/// Claims a trust may require at most, and the longest pattern or value.
const MAX_TRUST_CLAIMS: usize = 32;
const MAX_TRUST_TEXT: usize = 1024;
const MAX_TRUST_JWKS: usize = 64 * 1024;

pub(super) async fn list_trusts(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "credentials", "list", &robot)?;
    blocking(&state, move |st| {
        let r = st.auth.iam().robot(&org, &robot)?;
        let trusts = st.auth.iam().trusts(r.id)?;
        let list: Vec<_> = trusts.iter().map(trust_json).collect();
        Ok(json_response(StatusCode::OK, json!({ "trusts": list })))
    })
    .await
}

/// Adds a trust: workloads whose tokens match may act as the robot, so this needs what minting
/// a credential for it needs (credentials:create, and holding all the robot holds).
pub(super) async fn create_trust(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot)): Path<(String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    caller.require_manage(&org, "credentials", "create", &robot)?;
    let t: NewTrust = parse_body(&body)?;
    crate::iam::check_name("trust", &t.name)?;
    state
        .auth
        .check_issuer(&t.issuer)
        .map_err(ApiError::Invalid)?;
    let too_long = |what: &str, s: &str| -> ApiResult<()> {
        if s.is_empty() || s.len() > MAX_TRUST_TEXT {
            return Err(ApiError::Invalid(format!(
                "{what} must have 1 to {MAX_TRUST_TEXT} bytes"
            )));
        }
        crate::iam::check_text(what, s)?;
        Ok(())
    };
    too_long("issuer", &t.issuer)?;
    too_long("subject", &t.subject)?;
    if t.subject.chars().all(|c| c == '*') {
        return Err(ApiError::Invalid(
            "subject must name something: \"*\" alone would trust every workload of the issuer"
                .into(),
        ));
    }
    if let Some(a) = &t.audience {
        too_long("audience", a)?;
    }
    if t.claims.len() > MAX_TRUST_CLAIMS {
        return Err(ApiError::Invalid(format!(
            "at most {MAX_TRUST_CLAIMS} claims"
        )));
    }
    for (k, v) in &t.claims {
        too_long("a claim's name", k)?;
        too_long("a claim's value", v)?;
        if matches!(k.as_str(), "iss" | "sub" | "aud" | "exp" | "nbf" | "iat") {
            return Err(ApiError::Invalid(format!(
                "claim {k:?} is checked by the trust itself (issuer, subject, audience, times)"
            )));
        }
    }
    let jwks = match &t.jwks {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(text)) => Some(text.clone()),
        Some(v) => Some(v.to_string()),
    };
    if let Some(text) = &jwks {
        if text.len() > MAX_TRUST_JWKS {
            return Err(ApiError::Invalid(format!(
                "jwks is larger than {MAX_TRUST_JWKS} bytes"
            )));
        }
        crate::auth::workload::parse_jwks(text).map_err(ApiError::Invalid)?;
    }
    let claims = t.claims.clone();
    blocking(&state, move |st| {
        let r = robot_within_reach(st, &caller, &org, &robot)?;
        let row = crate::iam::Trust {
            id: 0,
            robot_id: r.id,
            org: r.org.clone(),
            robot: r.name.clone(),
            name: t.name.clone(),
            issuer: t.issuer.clone(),
            subject: t.subject.clone(),
            audience: t.audience.clone(),
            claims,
            jwks,
            created_at: crate::store::now(),
            last_used_at: None,
        };
        if !st
            .auth
            .iam()
            .add_trust(&row, &caller.provenance_in(st, &org)?)?
        {
            return Err(ApiError::Conflict(format!(
                "robot {robot:?} already has a trust named {:?}",
                t.name
            )));
        }
        audit_change(
            st,
            &caller,
            "robot_trust.create",
            format!(
                "robot/{org}/{robot}/trusts/{} issuer {} subject {}",
                t.name, t.issuer, t.subject
            ),
        );
        Ok(json_response(StatusCode::CREATED, trust_json(&row)))
    })
    .await
}

pub(super) async fn delete_trust(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot, name)): Path<(String, String, String)>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "credentials", "delete", &robot)?;
    blocking(&state, move |st| {
        let r = robot_within_reach(st, &caller, &org, &robot)?;
        if !st.auth.iam().delete_trust(r.id, &name)? {
            return Err(ApiError::NotFound(format!(
                "robot {robot:?} has no trust named {name:?}"
            )));
        }
        st.auth.refresh_revocations()?;
        audit_change(
            st,
            &caller,
            "robot_trust.delete",
            format!("robot/{org}/{robot}/trusts/{name}"),
        );
        Ok(StatusCode::NO_CONTENT.into_response())
    })
    .await
}

// ----- rotation -----

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Rotation {
    /// How long the old secret keeps working: `24h` (the default), `0` ends it at once.
    overlap: Option<String>,
    /// The caller's current password (`ApiCaller::require_fresh_proof`).
    password: Option<String>,
}

/// The overlap a rotation asks for (default a day, at most 30 days), and the password given.
fn overlap(body: &[u8]) -> ApiResult<(std::time::Duration, Option<String>)> {
    let r: Rotation = optional_body(body)?;
    let d = match r.overlap.as_deref() {
        None => std::time::Duration::from_secs(86_400),
        Some("0") => std::time::Duration::ZERO,
        Some(s) => parse_duration(s).map_err(ApiError::Invalid)?,
    };
    if d > std::time::Duration::from_secs(30 * 86_400) {
        return Err(ApiError::Invalid("overlap is at most 30d".into()));
    }
    Ok((d, r.password))
}

/// Rotates a credential of `owner` (by id or name): a new secret, the same id; answers it once.
fn rotate_owned(
    st: &AppState,
    caller: &ApiCaller,
    owner: Owner,
    kind: SecretKind,
    id: &str,
    (overlap, password): (std::time::Duration, Option<&str>),
    target: String,
) -> ApiResult<Response> {
    let row = find_owned(st, owner, kind, id)?;
    caller.require_not_derived_from(st, &row.id)?;
    // A new secret for a credential that never expires is a new long-lived secret.
    let left = row.expires_at.map(|e| {
        std::time::Duration::from_secs(u64::try_from(e - crate::store::now()).unwrap_or(0))
    });
    caller.require_fresh_proof(st, left, password)?;
    let new = st
        .auth
        .iam()
        .rotate_credential(&row.id, overlap, &caller.provenance())?;
    // A rotation may end a generation now: the current one (no overlap) or the one before
    // (an overlap was running, perhaps started by a rotation at the same moment). Whichever it
    // was, this node reads the revocations at once and forgets the logins it verified with the
    // credential, so an ended secret stops now, not when its cache would let it go. Rotations
    // are rare; the cost is one read.
    st.auth.refresh_revocations()?;
    st.auth.forget_credential(&row.id);
    audit_change(
        st,
        caller,
        "credential.rotate",
        format!("{target} overlap {}s", overlap.as_secs()),
    );
    let field = match kind {
        SecretKind::RobotToken => "token",
        SecretKind::ApiKey => "apikey",
        _ => "token",
    };
    let mut v = credential_json(&new.credential);
    v[field] = json!(new.secret.expose());
    if kind == SecretKind::RobotToken {
        v["accessId"] = json!(new.credential.id);
    }
    v["previousValidUntil"] = json!(time(new.credential.previous_until));
    Ok(json_response(StatusCode::OK, v))
}

pub(super) async fn rotate_robot_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot, id)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    rotate_robot_credential(
        state,
        caller,
        (org, robot, id),
        &body,
        SecretKind::RobotToken,
    )
    .await
}

pub(super) async fn rotate_robot_key(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path((org, robot, id)): Path<(String, String, String)>,
    body: Bytes,
) -> ApiResult<Response> {
    rotate_robot_credential(state, caller, (org, robot, id), &body, SecretKind::ApiKey).await
}

/// Rotates a robot's token or API key: what minting one for it needs.
async fn rotate_robot_credential(
    state: AppState,
    caller: ApiCaller,
    (org, robot, id): (String, String, String),
    body: &[u8],
    kind: SecretKind,
) -> ApiResult<Response> {
    caller.require_manage(&org, "credentials", "create", &robot)?;
    let (overlap, password) = overlap(body)?;
    let collection = if kind == SecretKind::ApiKey {
        "apikeys"
    } else {
        "tokens"
    };
    blocking(&state, move |st| {
        let r = robot_within_reach(st, &caller, &org, &robot)?;
        rotate_owned(
            st,
            &caller,
            Owner::Robot(r.id),
            kind,
            &id,
            (overlap, password.as_deref()),
            format!("robot/{org}/{robot}/{collection}/{id}"),
        )
    })
    .await
}

pub(super) async fn rotate_own_key(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(key): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let id = own_user(&caller)?;
    let (overlap, password) = overlap(&body)?;
    blocking(&state, move |st| {
        let target = format!("{}/apikeys/{key}", caller.subject());
        rotate_owned(
            st,
            &caller,
            Owner::User(id),
            SecretKind::ApiKey,
            &key,
            (overlap, password.as_deref()),
            target,
        )
    })
    .await
}

/// Rotating a registry token mints a new secret of it: what creating one needs.
pub(super) async fn rotate_registry_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Bytes,
) -> ApiResult<Response> {
    let org = organization(&headers)?;
    if matches!(caller.principal, Principal::RegistryToken { .. }) {
        return Err(ApiError::Forbidden(
            "a registry token cannot rotate registry tokens".into(),
        ));
    }
    caller.require_manage(&org, "credentials", "create", "registry-token")?;
    let (overlap, password) = overlap(&body)?;
    blocking(&state, move |st| {
        let org_row = st.auth.iam().org(&org)?;
        let readwrite =
            find_owned(st, Owner::Org(org_row.id), SecretKind::RegistryToken, &id)?.readwrite;
        let need = if readwrite {
            crate::policy::Action::Push
        } else {
            crate::policy::Action::Pull
        };
        if !crate::policy::org_wide_actions(&caller.grants, &org).contains(need) {
            return Err(ApiError::Forbidden(format!(
                "rotating this registry token needs {} access to the whole organization {org:?}",
                need.as_str()
            )));
        }
        rotate_owned(
            st,
            &caller,
            Owner::Org(org_row.id),
            SecretKind::RegistryToken,
            &id,
            (overlap, password.as_deref()),
            format!("org/{org}/tokens/{id}"),
        )
    })
    .await
}

// ----- the credentials of an organization, for expiry and hygiene -----

/// `GET /orgs/{org}/credentials`: every robot token, robot API key and registry token of the
/// organization, and the robots' trusts, with expiry and last use. `expiringWithin=14d` keeps
/// those expiring (or expired) within that time, `unusedFor=90d` those not used for that long
/// (never used counts from creation); with both, either.
pub(super) async fn list_org_credentials(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(org): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    caller.require_manage(&org, "credentials", "list", "")?;
    let secs = |k: &str| -> ApiResult<Option<i64>> {
        q.get(k)
            .map(|v| {
                parse_duration(v)
                    .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
                    .map_err(|e| ApiError::Invalid(format!("{k}: {e}")))
            })
            .transpose()
    };
    let (expiring, unused) = (secs("expiringWithin")?, secs("unusedFor")?);
    blocking(&state, move |st| {
        let org_row = st.auth.iam().org(&org)?;
        let now = crate::store::now();
        let wanted = |expires: Option<i64>, used: Option<i64>, created: i64| -> Vec<&'static str> {
            let mut why = Vec::new();
            if let (Some(w), Some(e)) = (expiring, expires)
                && e <= now.saturating_add(w)
            {
                why.push(if e <= now { "expired" } else { "expiring" });
            }
            if let Some(u) = unused
                && used.unwrap_or(created) <= now.saturating_sub(u)
            {
                why.push(if used.is_none() {
                    "never used"
                } else {
                    "unused"
                });
            }
            why
        };
        let filtering = expiring.is_some() || unused.is_some();
        let mut out = Vec::new();
        for (c, robot) in st.auth.iam().org_credentials(org_row.id)? {
            let why = wanted(c.expires_at, c.last_used_at, c.created_at);
            if filtering && why.is_empty() {
                continue;
            }
            let mut v = credential_json(&c);
            v["kind"] = json!(match c.kind.as_str() {
                "robot_token" => "robot token",
                "api_key" => "api key",
                "registry_token" => "registry token",
                k => k,
            });
            v["owner"] = json!(if robot.is_empty() {
                format!("org/{org}")
            } else {
                format!("robot/{robot}")
            });
            v["reasons"] = json!(why);
            out.push(v);
        }
        for r in st.auth.iam().robots(&org)? {
            for t in st.auth.iam().trusts(r.id)? {
                let why = wanted(None, t.last_used_at, t.created_at);
                if filtering && why.is_empty() {
                    continue;
                }
                out.push(json!({
                    "kind": "trust",
                    "owner": format!("robot/{}", r.name),
                    "name": t.name,
                    "id": t.name,
                    "status": "active",
                    "created": time(Some(t.created_at)),
                    "expires": null,
                    "lastUsed": t.last_used_at.map(|at| json!({"at": time(Some(at))})),
                    "reasons": why,
                }));
            }
        }
        Ok(json_response(StatusCode::OK, json!({ "credentials": out })))
    })
    .await
}
