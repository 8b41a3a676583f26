//! The kubelet's image credential provider documents (`credentialprovider.kubelet.k8s.io/v1`,
//! KEP-2133 and KEP-4412): the `CredentialProviderConfig` to install and the
//! `CredentialProviderResponse` to answer. Pure functions; `cli/provider` does the I/O.

use serde_json::{Value, json};

/// The API version of requests and responses.
pub const API: &str = "credentialprovider.kubelet.k8s.io/v1";
/// The service-account annotation naming the robot a pod's images are pulled as.
pub const ROBOT_ANNOTATION: &str = "berth.dev/robot";

/// The kubelet's `CredentialProviderConfig` for the provider executable `name`, asked about
/// images matching `match_image` (a trailing `/*` means every path), acting as `robot` when a
/// pod's service account names none (without it the annotation is required), with service-account
/// tokens of `audience`.
pub fn config(
    match_image: &[String],
    robot: Option<&str>,
    audience: &str,
    name: &str,
) -> Result<Value, String> {
    if match_image.is_empty() {
        return Err("give at least one --match-image".into());
    }
    if let Some(r) = robot
        && !r.contains('/')
    {
        return Err(format!("--robot {r:?} must be ORG/ROBOT"));
    }
    // The kubelet matches a pattern's path as a prefix (no globs): "host/*" means the host.
    let patterns: Vec<String> = match_image
        .iter()
        .map(|p| p.trim_end_matches("/*").trim_end_matches('/').to_owned())
        .collect();
    let mut args = vec!["credential-provider".to_owned()];
    // One registry host without globs: refuse images of any other host.
    if let [only] = patterns.as_slice() {
        let host = only.split('/').next().unwrap_or_default();
        if !host.contains('*') {
            args.extend(["--registry".to_owned(), host.to_owned()]);
        }
    }
    if let Some(r) = robot {
        args.extend(["--robot".to_owned(), r.to_owned()]);
    }
    let mut token = json!({
        "serviceAccountTokenAudience": audience,
        "requireServiceAccount": true,
        "cacheType": "Token",
    });
    if robot.is_none() {
        token["requiredServiceAccountAnnotationKeys"] = json!([ROBOT_ANNOTATION]);
    } else {
        token["optionalServiceAccountAnnotationKeys"] = json!([ROBOT_ANNOTATION]);
    }
    Ok(json!({
        "apiVersion": "kubelet.config.k8s.io/v1",
        "kind": "CredentialProviderConfig",
        "providers": [{
            "name": name,
            "matchImages": patterns,
            "defaultCacheDuration": "5m",
            "apiVersion": API,
            "args": args,
            "tokenAttributes": token,
        }],
    }))
}

/// The `CredentialProviderResponse` giving `username` and `password` for registry `host`, cached
/// by the kubelet for `cache_secs`.
pub fn response(host: &str, username: &str, password: &str, cache_secs: i64) -> Value {
    json!({
        "apiVersion": API,
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry",
        "cacheDuration": format!("{cache_secs}s"),
        "auth": { host: { "username": username, "password": password } },
    })
}
