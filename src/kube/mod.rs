//! Kubernetes- and Docker-shaped documents, as pure functions over plain values: a docker
//! config's `auths`, the `kubernetes.io/dockerconfigjson` pull secret, Crossplane's
//! `ImageConfig`, the RBAC manifests `apply -f` reads and `get -o yaml` exports, the kubelet's
//! `CredentialProviderConfig` and `CredentialProviderResponse` (`provider`), and the
//! kubeconfig-shaped client config (`config`). The CLI, the console and the credential
//! provider all build their documents here, so they are identical.
//!
//! A leaf: it imports no other berth module (`tests/it/tidy.rs` checks).

pub mod config;
pub mod provider;

use base64::Engine as _;
use serde_json::{Value, json};

/// The commands a token file is for, as the console's secret page shows them: (what it does,
/// the command line with `file` in it). The CLI parses every one of them in its unit tests and
/// the console's test runs them with a downloaded file, so a renamed flag cannot leave the page
/// telling users to type something that fails.
pub fn token_file_commands(
    file: &str,
    host: &str,
    secret_name: &str,
    namespace: &str,
) -> Vec<(&'static str, String)> {
    vec![
        (
            "a Kubernetes pull secret",
            format!(
                "berth pull-secret create {secret_name} -f {file} --server {host} --namespace {namespace}"
            ),
        ),
        (
            "docker's and podman's credentials",
            format!("berth docker-config -f {file} --server {host}"),
        ),
        (
            "the kubelet's credential provider",
            format!("berth credential-provider --token-file {file} --registry {host}"),
        ),
    ]
}

/// One `auths` entry of a docker config (`~/.docker/config.json`, `.dockerconfigjson`): the
/// user name, password, optional e-mail and `auth` (base64 of `user:password`).
pub fn docker_auth(user: &str, password: &str, email: Option<&str>) -> Value {
    let mut entry = json!({ "username": user, "password": password });
    if let Some(email) = email {
        entry["email"] = json!(email);
    }
    entry["auth"] = json!(b64(&format!("{user}:{password}")));
    entry
}

/// A docker config holding one login as docker itself stores it: `{"auths": {host: {"auth"}}}`.
pub fn docker_config(host: &str, user: &str, secret: &str) -> Value {
    json!({ "auths": { host: { "auth": b64(&format!("{user}:{secret}")) } } })
}

/// A Kubernetes pull secret (`kubernetes.io/dockerconfigjson`) for `host` with the same fields as
/// `kubectl create secret docker-registry`.
pub fn pull_secret(
    name: &str,
    namespace: &str,
    host: &str,
    user: &str,
    password: &str,
    email: Option<&str>,
) -> Value {
    let docker = json!({ "auths": { host: docker_auth(user, password, email) } });
    json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": { "name": name, "namespace": namespace },
        "type": "kubernetes.io/dockerconfigjson",
        "data": { ".dockerconfigjson": b64(&docker.to_string()) },
    })
}

/// A Crossplane `ImageConfig` that makes packages under `prefixes` pull with `pull_secret`.
pub fn image_config(name: &str, prefixes: &[String], pull_secret: &str) -> Value {
    json!({
        "apiVersion": "pkg.crossplane.io/v1beta1",
        "kind": "ImageConfig",
        "metadata": { "name": name },
        "spec": {
            "matchImages": prefixes.iter().map(|p| json!({ "prefix": p })).collect::<Vec<_>>(),
            "registry": { "authentication": { "pullSecretRef": { "name": pull_secret } } },
        },
    })
}

/// The document `apply -f` takes back for a role or binding as the API shows it
/// (`berth role get NAME -o yaml`, `berth binding get NAME -o yaml`, the console's YAML).
pub fn rbac_manifest(v: &Value) -> Value {
    // A group's binding is Kubernetes RBAC's: a RoleBinding in its namespace, or a
    // ClusterRoleBinding for the whole organization, naming `kind: Group` (a repository glob has
    // no Kubernetes form and stays in berth's shape).
    if v["kind"] == "Binding"
        && v["repository"].is_null()
        && let Some(group) = v["subject"].as_str().and_then(|s| s.strip_prefix("group/"))
    {
        let mut doc = json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": if v["namespace"].is_null() { "ClusterRoleBinding" } else { "RoleBinding" },
            "metadata": { "name": v["name"], "org": v["org"] },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": v["role"] },
            "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": group }],
        });
        if !v["namespace"].is_null() {
            doc["metadata"]["namespace"] = v["namespace"].clone();
        }
        return doc;
    }
    let mut doc = json!({
        "apiVersion": "berth.dev/v1",
        "kind": v["kind"],
        "metadata": { "name": v["name"], "org": v["org"] },
    });
    match v["kind"].as_str() {
        Some("Role") => doc["rules"] = v["rules"].clone(),
        _ => {
            for k in ["role", "subject", "namespace", "repository"] {
                if !v[k].is_null() {
                    doc[k] = v[k].clone();
                }
            }
        }
    }
    doc
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_secret_is_what_kubectl_makes() {
        let s = pull_secret("s", "ns", "reg.example:5000", "u", "p", Some("e@x"));
        assert_eq!(s["type"], "kubernetes.io/dockerconfigjson");
        let inner = base64::engine::general_purpose::STANDARD
            .decode(s["data"][".dockerconfigjson"].as_str().unwrap())
            .unwrap();
        let inner: Value = serde_json::from_slice(&inner).unwrap();
        let e = &inner["auths"]["reg.example:5000"];
        assert_eq!(
            (
                e["username"].as_str(),
                e["password"].as_str(),
                e["email"].as_str()
            ),
            (Some("u"), Some("p"), Some("e@x"))
        );
        assert_eq!(e["auth"], b64("u:p"));
    }

    #[test]
    fn rbac_manifests_keep_what_apply_reads() {
        let b = json!({"kind": "Binding", "name": "b", "org": "acme", "role": "Reader", "subject": "robot/r", "namespace": null});
        let m = rbac_manifest(&b);
        assert_eq!(m["apiVersion"], "berth.dev/v1");
        assert_eq!(m["subject"], "robot/r");
        assert!(m.get("namespace").is_none());
        let g = json!({"kind": "Binding", "name": "devs", "org": "acme", "role": "Writer", "subject": "group/dev", "namespace": "team", "repository": null});
        let m = rbac_manifest(&g);
        assert_eq!(m["kind"], "RoleBinding");
        assert_eq!(m["metadata"]["namespace"], "team");
        assert_eq!(m["subjects"][0]["kind"], "Group");
        assert_eq!(m["subjects"][0]["name"], "dev");
        assert_eq!(m["roleRef"]["name"], "Writer");
        let mut whole = g.clone();
        whole["namespace"] = Value::Null;
        assert_eq!(rbac_manifest(&whole)["kind"], "ClusterRoleBinding");
    }
}
