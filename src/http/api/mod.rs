//! The management API under `/api/v1`: JSON in and out, every route authorized with the same
//! grants and `policy` functions as `/v2`.
//!
//! Callers authenticate with `Authorization: Bearer <access token>` (from `POST /auth/login`) or
//! with Basic credentials (any login the token service accepts: a password, an API key, a robot
//! token). Errors are `{"error": {"code", "message"}}` with the status from one match in
//! `ApiError`. Handlers run their blocking work (argon2, SQLite) through `blocking`.

mod access;
pub(crate) mod common;
mod identity;
mod repos;
mod robots;
pub(crate) mod session;
mod sso;
pub(crate) use sso::{open_sso_session, within_budget as sso_budget};

use axum::Router;
use axum::http::StatusCode;
use axum::response::Response;
use serde_json::json;

use super::answer::RouteName;
use crate::state::AppState;
use axum::response::IntoResponse as _;
use common::ApiError;

/// The route table: each line is method, path, handler, summary, success status and the
/// top-level fields of the success body (`name?`: optional). It builds the router and the
/// OpenAPI document both, so neither can forget a route; a test compares the documented shapes
/// with real answers.
macro_rules! api_routes {
    ($( $method:ident $path:literal => $handler:path, $summary:literal, $status:literal, [$($field:literal),*]; )*) => {
        pub(crate) fn router() -> Router<AppState> {
            let r = Router::new();
            $( let r = r.route($path, axum::routing::$method($handler)); )*
            r.route("/openapi.json", axum::routing::get(openapi_json))
                .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
                .layer(axum::middleware::map_response(|r: Response| async move {
                    let mut r = common::json_errors(r).await;
                    if r.extensions().get::<RouteName>().is_none() {
                        r.extensions_mut().insert(RouteName("api"));
                    }
                    r
                }))
        }

        /// (method, path, operation id, summary, success status, top-level fields of the
        /// success body) of every route.
        pub(crate) const ROUTES: &[(&str, &str, &str, &str, u16, &[&str])] = &[
            $( (stringify!($method), $path, stringify!($handler), $summary, $status, &[$($field),*]), )*
        ];
    };
}

api_routes! {
    post "/auth/login" => session::login, "Log in with a user name and password: an access token and a refresh token", 200, ["access_token", "refresh_token", "expires_in", "token_type"];
    post "/auth/refresh" => session::refresh, "Exchange a refresh token for new tokens (the old refresh token stops working)", 200, ["access_token", "refresh_token", "expires_in", "token_type"];
    get "/auth/sso" => sso::providers, "The identity providers people may sign in with (single sign-on): name, displayName, issuer", 200, ["providers"];
    post "/auth/sso/{provider}/device" => sso::device, "Start a device sign-in at an identity provider (RFC 8628): the code to type there, and a handle to poll with", 200, ["user_code", "verification_uri", "verification_uri_complete?", "expires_in", "interval", "handle"];
    post "/auth/sso/{provider}/token" => sso::token, "Poll a device sign-in with its handle: 400 authorization_pending until approved, then berth's session", 200, ["access_token", "refresh_token", "expires_in", "token_type"];
    post "/auth/sso/{provider}/code" => sso::code, "Finish a command line's loopback sign-in (RFC 8252): the one-time code with the PKCE verifier gives berth's session", 200, ["access_token", "refresh_token", "expires_in", "token_type"];
    post "/auth/logout" => session::logout, "Revoke a refresh token", 204, [];
    get "/auth/whoami" => session::whoami, "Who the caller is", 200, ["subject", "kind", "name", "admin", "orgs"];
    post "/auth/access-token" => session::access_token, "A short-lived access token for the calling user (login user name iambearer)", 200, ["access_token", "expires_in", "token_type"];
    get "/sessions" => session::list_sessions, "List the caller's sessions (refresh-token families) with where they came from", 200, ["sessions"];
    delete "/sessions" => session::revoke_all_sessions, "End all of the caller's sessions and their access tokens", 204, [];
    delete "/sessions/{id}" => session::revoke_session, "End one of the caller's sessions and its access tokens", 204, [];
    get "/users" => identity::list_users, "List users (server admins)", 200, ["users"];
    post "/users" => identity::create_user, "Create a user (server admins)", 201, ["name", "admin", "created"];
    get "/users/{user}" => identity::get_user, "Get a user (the user or a server admin)", 200, ["name", "admin", "created"];
    delete "/users/{user}" => identity::delete_user, "Delete a user (server admins)", 204, [];
    put "/users/{user}/password" => identity::set_password, "Set a user's password (the user or a server admin)", 204, [];
    get "/orgs" => identity::list_orgs, "List the organizations the caller belongs to", 200, ["orgs"];
    post "/orgs" => identity::create_org, "Create an organization and its namespace; the caller becomes owner", 201, ["name", "created"];
    get "/orgs/{org}" => identity::get_org, "Get an organization with its namespaces", 200, ["name", "created", "namespaces"];
    delete "/orgs/{org}" => identity::delete_org, "Delete an organization (owners)", 204, [];
    get "/orgs/{org}/members" => identity::list_members, "List members", 200, ["members"];
    put "/orgs/{org}/members/{user}" => identity::set_member, "Change a member's role (owners); a user who is not a member is invited (202, the same answer whether or not the user exists) and joins on accepting; a server admin adds directly", 200, ["user", "role", "status"];
    get "/invitations" => identity::list_invitations, "The caller's invitations: organizations it may join, with the role offered", 200, ["invitations"];
    post "/orgs/{org}/invitations/accept" => identity::accept_invitation, "Accept the caller's invitation to an organization: join it with the role offered", 200, ["user", "role", "status"];
    delete "/orgs/{org}/members/{user}" => identity::remove_member, "Remove a member (owners)", 204, [];
    get "/orgs/{org}/namespaces" => identity::list_namespaces, "List an organization's namespaces", 200, ["namespaces"];
    post "/orgs/{org}/namespaces" => identity::create_namespace, "Create a namespace (owners)", 201, ["name", "org", "public", "created"];
    get "/namespaces/{ns}" => identity::get_namespace, "Get a namespace", 200, ["name", "org", "public", "created"];
    patch "/namespaces/{ns}" => identity::patch_namespace, "Make a namespace public or private (owners)", 200, ["name", "org", "public", "created"];
    delete "/namespaces/{ns}" => identity::delete_namespace, "Delete a namespace (owners)", 204, [];
    get "/orgs/{org}/robots" => robots::list_robots, "List robots", 200, ["robots"];
    post "/orgs/{org}/robots" => robots::create_robot, "Create a robot (robots:create in the org: Manager, owner, admin); it holds nothing until bound", 201, ["org", "name", "description", "created"];
    get "/orgs/{org}/robots/{robot}" => robots::get_robot, "Get a robot with its workload trusts", 200, ["org", "name", "description", "created", "trusts"];
    get "/orgs/{org}/robots/{robot}/trusts" => robots::list_trusts, "List a robot's workload trusts (credentials:list)", 200, ["trusts"];
    post "/orgs/{org}/robots/{robot}/trusts" => robots::create_trust, "Trust workloads whose tokens of an OpenID issuer match (subject pattern, audience, claims) to act as the robot (credentials:create, and holding all the robot holds)", 201, ["name", "issuer", "subject", "audience", "claims", "jwks", "created", "lastUsed"];
    delete "/orgs/{org}/robots/{robot}/trusts/{name}" => robots::delete_trust, "Delete a workload trust; registry tokens issued through it stop working (credentials:delete, and holding all the robot holds)", 204, [];
    delete "/orgs/{org}/robots/{robot}" => robots::delete_robot, "Delete a robot with its credentials, the credentials it created and its bindings (robots:delete, and holding all the robot holds)", 204, [];
    get "/orgs/{org}/robots/{robot}/tokens" => robots::list_robot_tokens, "List a robot's tokens (no secrets; created, expires, last used)", 200, ["tokens"];
    post "/orgs/{org}/robots/{robot}/tokens" => robots::create_robot_token, "Create a robot token: {accessId, token}, shown once (credentials:create, and holding all the robot holds)", 201, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "accessId", "token"];
    post "/orgs/{org}/robots/{robot}/tokens/{id}/rotate" => robots::rotate_robot_token, "Rotate a robot token: a new secret, the same accessId; the old secret works for the overlap ({\"overlap\": \"24h\"} by default, \"0\" ends it at once). Shown once (credentials:create, and holding all the robot holds)", 200, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "accessId", "token", "previousValidUntil"];
    delete "/orgs/{org}/robots/{robot}/tokens/{id}" => robots::delete_robot_token, "Delete a robot token by id or name (credentials:delete, and holding all the robot holds)", 204, [];
    get "/orgs/{org}/robots/{robot}/apikeys" => robots::list_robot_keys, "List a robot's API keys", 200, ["apikeys"];
    post "/orgs/{org}/robots/{robot}/apikeys" => robots::create_robot_key, "Create an API key for a robot, shown once (credentials:create, and holding all the robot holds)", 201, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "apikey"];
    post "/orgs/{org}/robots/{robot}/apikeys/{id}/rotate" => robots::rotate_robot_key, "Rotate a robot's API key with an overlap (as for robot tokens)", 200, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "apikey", "previousValidUntil"];
    delete "/orgs/{org}/robots/{robot}/apikeys/{id}" => robots::delete_robot_key, "Delete a robot's API key by id or name (credentials:delete, and holding all the robot holds)", 204, [];
    get "/orgs/{org}/credentials" => robots::list_org_credentials, "Every robot token, robot API key, registry token and trust of an organization with expiry and last use; expiringWithin=14d and unusedFor=90d keep those that need attention (credentials:list)", 200, ["credentials"];
    get "/apikeys" => robots::list_own_keys, "List the caller's API keys", 200, ["apikeys"];
    post "/apikeys" => robots::create_own_key, "Create an API key for the calling user, shown once; made through another credential, it ends with that credential", 201, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "apikey"];
    post "/apikeys/{id}/rotate" => robots::rotate_own_key, "Rotate one of the caller's API keys with an overlap", 200, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "apikey", "previousValidUntil"];
    delete "/apikeys/{id}" => robots::delete_own_key, "Delete one of the caller's API keys (by id or name)", 204, [];
    get "/tokens" => robots::list_registry_tokens, "List registry tokens of the organization in the Organization header", 200, ["tokens"];
    post "/tokens" => robots::create_registry_token, "Create a registry token for the Organization header's org, permanent=true: no expiry (credentials:create there and org-wide pull, or push for readwrite)", 201, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "token"];
    post "/tokens/{id}/rotate" => robots::rotate_registry_token, "Rotate a registry token of the Organization header's org with an overlap (what creating one needs)", 200, ["id", "name", "description", "readwrite", "created", "expires", "revoked", "lastUsed", "status", "token", "previousValidUntil"];
    delete "/tokens/{id}" => robots::delete_registry_token, "Delete a registry token by id or name (credentials:delete)", 204, [];
    get "/orgs/{org}/roles" => access::list_roles, "List roles (built-in and custom)", 200, ["roles"];
    get "/orgs/{org}/roles/{name}" => access::get_role, "Get a role", 200, ["kind", "org", "name", "rules", "builtin"];
    put "/orgs/{org}/roles/{name}" => access::put_role, "Create or replace a custom role (roles:update, and holding org-wide every rule it has and had)", 200, ["kind", "org", "name", "rules", "builtin"];
    delete "/orgs/{org}/roles/{name}" => access::delete_role, "Delete a custom role (roles:delete, and holding org-wide every rule it has)", 204, [];
    get "/orgs/{org}/bindings" => access::list_bindings, "List bindings", 200, ["bindings"];
    get "/orgs/{org}/bindings/{name}" => access::get_binding, "Get a binding", 200, ["kind", "org", "name", "role", "subject", "namespace?", "repository?"];
    put "/orgs/{org}/bindings/{name}" => access::put_binding, "Create or replace a binding (bindings:update, and holding what it grants and what the replaced one granted)", 200, ["kind", "org", "name", "role", "subject", "namespace?", "repository?"];
    delete "/orgs/{org}/bindings/{name}" => access::delete_binding, "Delete a binding (bindings:delete, and holding what it grants)", 204, [];
    post "/orgs/{org}/access-review" => access::review, "Whether a subject may do a verb on a resource", 200, ["allowed"];
    get "/audit" => access::audit, "List audit events, newest first (filters: actor, action, outcome, since and until as Unix seconds, RFC 3339 or a duration back from now; before: the next page's cursor; limit)", 200, ["events", "next"];
    get "/orgs/{org}/audit" => access::org_audit, "An organization's audit events, newest first: what anyone did in it (owners, and roles that grant list on audit; the same filters as /audit)", 200, ["events", "next"];
    get "/orgs/{org}/repositories" => repos::list_repositories, "A page of the organization's repositories the caller may pull (q: a part of the name; sort: name, pushed or size; page, n ≤ 100), with tag count, size and last push (members)", 200, ["repositories", "total", "page", "pages", "next"];
    get "/orgs/{org}/repositories/{*repository}" => repos::get_repository, "A page of a repository's tags (q: a part of the tag; sort: pushed, newest first, or name; page, n ≤ 50) with digest, media type, image size (per platform for an index), annotations (up to 16 KiB) and push time, the first 10 referrers of each, the caller's actions on it, total, pages and next, the next page's number (members who may pull it)", 200, ["name", "org", "actions", "tags", "total", "page", "pages", "next"];
    delete "/orgs/{org}/repositories/{*repository}" => repos::delete_repository, "Delete a repository with every tag and manifest; its blobs go with the next GC unless another repository links them (members who may delete in it)", 204, [];
    get "/orgs/{org}/storage" => repos::storage, "Storage per namespace of the organization: repositories and bytes (members)", 200, ["namespaces"];
}

/// The OpenAPI 3 document of this API, built from `ROUTES`.
pub(crate) fn openapi() -> serde_json::Value {
    let mut paths = serde_json::Map::new();
    for (method, path, handler, summary, status, fields) in ROUTES {
        let params: Vec<serde_json::Value> = path
            .split('/')
            .filter_map(|seg| seg.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| name.trim_start_matches('*'))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let mut op = json!({
            "operationId": handler.replace("::", "_"),
            "summary": summary,
            "parameters": params,
            "responses": {
                status.to_string(): success(fields),
                "400": error_answer("invalid request"),
                "401": error_answer("authentication required"),
                "403": error_answer("not allowed"),
                "404": error_answer("not found"),
            },
        });
        // A create-or-replace PUT answers 201 when it created, 200 when it replaced.
        if *method == "put" && *status == 200 && fields.contains(&"kind") {
            op["responses"]["201"] = success(fields);
        }
        // Adding a member who is not one yet is an invitation.
        if *path == "/orgs/{org}/members/{user}" {
            op["responses"]["202"] = success(fields);
        }
        if ["post", "put", "patch"].contains(method) {
            op["requestBody"] =
                json!({ "content": { "application/json": { "schema": { "type": "object" } } } });
        }
        if *path == "/auth/login"
            || *path == "/auth/refresh"
            || *path == "/auth/logout"
            || path.starts_with("/auth/sso")
        {
            op["security"] = json!([]);
        }
        let entry = paths
            .entry(format!("/api/v1{}", path.replace("{*", "{")))
            .or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    let mut schemas = json!({
        "Error": { "type": "object", "properties": { "error": { "type": "object", "properties": {
            "code": { "type": "string" }, "message": { "type": "string" } } } } },
    });
    complete(&mut paths, &mut schemas);
    json!({
        "openapi": "3.0.3",
        "info": { "title": "berth management API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "security": [{ "bearer": [] }, { "basic": [] }],
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "bearerFormat": "JWT" },
                "basic": { "type": "http", "scheme": "basic" },
            },
            "schemas": schemas,
        },
    })
}

/// What the route table cannot say of each operation — request bodies, query and header
/// parameters, every answer's schema (errors included), links between operations — kept beside
/// it as data, keyed `METHOD /path` as the table writes the path.
const OPENAPI_EXTRA: &str = include_str!("openapi_extra.json");

/// Completes the generated operations with `OPENAPI_EXTRA`: a request body replaces the
/// generic one, parameters are added, an answer of a status replaces the generated one, links
/// go into their answer, and schemas join the components.
fn complete(
    paths: &mut serde_json::Map<String, serde_json::Value>,
    schemas: &mut serde_json::Value,
) {
    let Ok(extra) = serde_json::from_str::<serde_json::Value>(OPENAPI_EXTRA) else {
        return;
    };
    if let (Some(add), Some(have)) = (extra["schemas"].as_object(), schemas.as_object_mut()) {
        for (k, v) in add {
            have.insert(k.clone(), v.clone());
        }
    }
    let Some(ops) = extra["operations"].as_object() else {
        return;
    };
    for (key, more) in ops {
        let Some((method, path)) = key.split_once(' ') else {
            continue;
        };
        let path = format!("/api/v1{}", path.replace("{*", "{"));
        let Some(op) = paths
            .get_mut(&path)
            .and_then(|p| p.get_mut(method.to_ascii_lowercase()))
        else {
            continue;
        };
        if let Some(body) = more.get("requestBody") {
            op["requestBody"] = body.clone();
        }
        if let (Some(add), Some(have)) = (
            more.get("parameters").and_then(|p| p.as_array()),
            op["parameters"].as_array_mut(),
        ) {
            // Added, or in place of the generated one of the same name and place (a path
            // parameter gets its pattern this way).
            for p in add {
                match have
                    .iter_mut()
                    .find(|h| h["name"] == p["name"] && h["in"] == p["in"])
                {
                    Some(h) => *h = p.clone(),
                    None => have.push(p.clone()),
                }
            }
        }
        if let Some(answers) = more.get("responses").and_then(|r| r.as_object()) {
            for (status, answer) in answers {
                op["responses"][status] = answer.clone();
            }
        }
        if let Some(links) = more.get("links").and_then(|l| l.as_object()) {
            for (status, link) in links {
                if op["responses"].get(status).is_none() {
                    op["responses"][status] = json!({ "description": status });
                }
                op["responses"][status]["links"] = link.clone();
            }
        }
    }
}

/// An error answer: the one error body of the API.
fn error_answer(description: &str) -> serde_json::Value {
    json!({
        "description": description,
        "content": { "application/json": { "schema": { "$ref": "#/components/schemas/Error" } } },
    })
}

/// The success answer of an operation: no body, or a JSON object with these fields.
fn success(fields: &[&str]) -> serde_json::Value {
    if fields.is_empty() {
        return json!({ "description": "success" });
    }
    // A field written `name?` is optional.
    let properties: serde_json::Map<String, serde_json::Value> = fields
        .iter()
        .map(|f| (f.trim_end_matches('?').to_owned(), json!({})))
        .collect();
    let required: Vec<&str> = fields
        .iter()
        .copied()
        .filter(|f| !f.ends_with('?'))
        .collect();
    json!({
        "description": "success",
        "content": { "application/json": { "schema": {
            "type": "object", "properties": properties, "required": required,
        } } },
    })
}

async fn openapi_json() -> Response {
    // Built once: the table and the completions never change while the server runs.
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(|| openapi().to_string()).clone(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    /// Every operation the extra document completes is a route of the table, and the file reads.
    #[test]
    fn the_documents_completions_name_real_operations() {
        let extra: serde_json::Value =
            serde_json::from_str(super::OPENAPI_EXTRA).expect("openapi_extra.json is JSON");
        let ops = extra["operations"].as_object().expect("operations");
        for key in ops.keys() {
            let (method, path) = key.split_once(' ').expect("METHOD /path");
            assert!(
                super::ROUTES
                    .iter()
                    .any(|r| r.0.eq_ignore_ascii_case(method) && r.1 == path),
                "{key} is not a route"
            );
        }
        assert_eq!(ops.len(), super::ROUTES.len(), "every route is completed");
        let doc = super::openapi();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                for (status, answer) in op["responses"].as_object().unwrap() {
                    if status.starts_with('4') || status.starts_with('5') {
                        assert!(
                            answer["content"]["application/json"]["schema"].is_object(),
                            "{method} {path} {status} has no error body"
                        );
                    }
                }
            }
        }
    }
}
