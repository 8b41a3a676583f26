//! The parsers that read bytes from outside, as the fuzz targets (`fuzz/`) and their corpus
//! replay (`tests/it/fuzz_corpus.rs`) call them. Each function here is the server's or the CLI's
//! own code path, reached without a socket; nothing in it is used by the binary.

use axum::http::{HeaderMap, HeaderValue, Method, header};
use serde_json::Value;

use crate::http::access::{Presented, presented};
use crate::policy::scope::Scope;

/// A `/v2` route as the router reads it: its stable name and repository, or why it is none.
pub fn oci_route(method: &Method, path: &str) -> Result<(&'static str, Option<String>), String> {
    crate::http::oci::route::OciRoute::parse(method, path)
        .map(|r| (r.name(), r.repository().map(ToString::to_string)))
        .map_err(|e| format!("{e:?}"))
}

/// A `Range` header of a blob GET, resolved against a blob of `size` bytes: `Err` when the
/// header is refused (400), `Ok(None)` when unsatisfiable (416), else the first and last byte.
pub fn range(v: &str, size: u64) -> Result<Option<(u64, u64)>, String> {
    let r = crate::http::oci::blobs::parse_range(v).map_err(|e| format!("{e:?}"))?;
    Ok(r.resolve(size))
}

/// A `Content-Range` header of an upload PATCH: the first and last byte, inclusive.
pub fn content_range(v: &str) -> Result<(u64, u64), String> {
    crate::http::oci::uploads::parse_content_range(v).map_err(|e| format!("{e:?}"))
}

/// The `/token` GET query or POST form (RFC 8693's too): its pairs, and the scopes it asks for.
pub fn token_form(text: &str) -> (Vec<(String, String)>, Vec<Scope>) {
    let pairs = crate::http::token::pairs(text);
    let scopes = crate::http::token::scopes_of(
        pairs
            .iter()
            .filter(|(k, _)| k == "scope")
            .map(|(_, v)| v.as_str()),
    );
    (pairs, scopes)
}

/// The credentials of an `Authorization` header: `Some((user, secret))` for Basic, `None` for
/// no header, a bearer token, or a malformed one.
pub fn basic(value: &[u8]) -> Option<(String, String)> {
    let v = HeaderValue::from_bytes(value).ok()?;
    let mut h = HeaderMap::new();
    h.insert(header::AUTHORIZATION, v);
    match presented(&h) {
        Presented::Basic(u, p) => Some((u, p)),
        Presented::None | Presented::Bearer(_) | Presented::Malformed => None,
    }
}

/// One document of an `apply -f` file as planned: its collection, organization and objects.
pub type PlannedDocument = (&'static str, String, Vec<String>);

/// The documents of an `apply -f` file, each planned for organization `org`: per document its
/// API collection and object names, or the error `apply` prints.
pub fn apply(text: &str, org: &str) -> Result<Vec<PlannedDocument>, String> {
    let docs = crate::cli::apply::documents(text).map_err(|e| e.to_string())?;
    docs.iter()
        .enumerate()
        .map(|(i, d)| {
            crate::cli::apply::plan_document(i + 1, d, Some(org), None)
                .map(|p| (p.kind, p.org, p.objects.into_iter().map(|o| o.0).collect()))
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// A console form body, as the console reads it before any handler (`application/x-www-form-
/// urlencoded`): its fields, or `None` when it cannot be read (400).
pub fn console_form(body: &[u8]) -> Option<std::collections::HashMap<String, String>> {
    serde_urlencoded::from_bytes(body).ok()
}

/// A role's rules as the API reads them from a body (the console's rules field is YAML that
/// becomes this JSON): the rules, or why they are refused.
pub fn role_rules(rules: &Value) -> Result<Vec<crate::policy::Rule>, String> {
    let rules: Vec<crate::policy::Rule> =
        serde_json::from_value(rules.clone()).map_err(|e| e.to_string())?;
    for r in &rules {
        r.validate()?;
    }
    Ok(rules)
}

/// What the kubelet's credential provider answers to a request's text, for registry
/// `registry.example.com` and robot `acme/ci` at Unix time `now`.
pub fn credential_provider(text: &str, now: i64) -> Result<Value, String> {
    let args = crate::cli::provider::ProviderArgs {
        registry: Some("registry.example.com".into()),
        robot: Some("acme/ci".into()),
        token_file: None,
        command: None,
    };
    crate::cli::provider::answer(text, &args, now).map_err(|e| e.to_string())
}

/// The CLI's configuration file read, printed, read again and printed again: both prints;
/// `None` when the text is not a configuration, `Err` when what berth printed does not read.
pub fn client_config(text: &str) -> Option<Result<(String, String), String>> {
    use crate::kube::config::ClientConfig;
    let c: ClientConfig = serde_norway::from_str(text).ok()?;
    let round = || -> Result<(String, String), String> {
        let printed = serde_norway::to_string(&c).map_err(|e| format!("printing: {e}"))?;
        let again: ClientConfig =
            serde_norway::from_str(&printed).map_err(|e| format!("reading {printed:?}: {e}"))?;
        let second = serde_norway::to_string(&again).map_err(|e| format!("printing: {e}"))?;
        Ok((printed, second))
    };
    Some(round())
}
