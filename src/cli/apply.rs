//! `berth apply -f FILE|-`: roles and bindings from multi-document YAML, idempotently, printing
//! `created`, `configured` or `unchanged` per document (like `kubectl apply`). Every document is
//! checked before anything changes. berth's own shape:
//!
//! ```yaml
//! apiVersion: berth.dev/v1          # berth/v1 is read too
//! kind: Role
//! metadata: {name: puller, org: acme}
//! rules: [{resources: [repositories], verbs: [pull], names: ["acme/pub-*"]}]
//! ---
//! apiVersion: berth.dev/v1
//! kind: Binding
//! metadata: {name: deployer}
//! role: puller
//! subject: robot/deployer
//! namespace: acme        # or repository: GLOB; neither: the whole organization
//! ```
//!
//! and Kubernetes RBAC's (seed 004): `Role`/`ClusterRole` with `rules: [{apiGroups, resources,
//! verbs, resourceNames}]` (`apiGroups` ignored), `RoleBinding` (scope: `metadata.namespace`, a
//! berth namespace; absent, the organization) and `ClusterRoleBinding` (the organization) with
//! `subjects: [{kind: Robot|ServiceAccount|User, name}]` and `roleRef: {kind, name}`. A binding
//! with several subjects becomes one binding per subject, named `NAME.SUBJECT`.
//! `berth role get NAME -o yaml` and `berth binding get NAME -o yaml` print documents this reads.

use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::context;
use super::errors::Usage;
use crate::client::ClientError;
use crate::policy::Rule;

pub(super) async fn apply(
    file: &str,
    org_flag: Option<&str>,
    cfg_path: &Path,
    verbose: bool,
) -> anyhow::Result<()> {
    let text = if file == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
    };
    let docs = documents(&text)?;
    let (client, ctx_org) = context::client(cfg_path, verbose).await?;
    // Check every document before changing anything.
    let mut plan: Vec<Planned> = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        plan.push(plan_document(i + 1, doc, org_flag, ctx_org.as_deref())?);
    }
    for p in plan {
        let mut verdicts = Vec::new();
        for (name, body) in &p.objects {
            verdicts.push(put(&client, p.kind, &p.org, name, body).await?);
        }
        // One line per document, as written (a binding with several subjects is one object).
        let verdict = if verdicts.iter().all(|v| *v == "unchanged") {
            "unchanged"
        } else if verdicts.contains(&"configured") {
            "configured"
        } else {
            "created"
        };
        crate::cli_print(&format!("{}/{} {verdict}", p.shown_kind, p.name));
    }
    Ok(())
}

/// The documents of a file as `apply` reads them: YAML documents, empty ones skipped, and the
/// items of `role list -o yaml` / `binding list -o yaml` each as one document (built-in roles
/// left out).
pub(crate) fn documents(text: &str) -> anyhow::Result<Vec<Value>> {
    let mut docs = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| Usage(format!("document {}: {e}", i + 1)))?;
        if v.is_null() {
            continue;
        }
        // What `role list -o yaml` and `binding list -o yaml` print: each item is applied as
        // `get -o yaml` prints it (built-in roles exist everywhere and are left alone).
        match (
            &v["kind"],
            v["roles"].as_array().or(v["bindings"].as_array()),
        ) {
            (Value::Null, Some(items)) => docs.extend(
                items
                    .iter()
                    .filter(|item| item["builtin"] != json!(true))
                    .map(crate::kube::rbac_manifest),
            ),
            _ => docs.push(v),
        }
    }
    Ok(docs)
}

/// What one document asks for: objects of one kind in one organization.
pub(crate) struct Planned {
    /// `role` or `binding` (the API's collection).
    pub(crate) kind: &'static str,
    /// How the document called itself (`role`, `clusterrole`, `rolebinding`, …).
    pub(crate) shown_kind: String,
    pub(crate) org: String,
    pub(crate) name: String,
    /// (object name, API body)
    pub(crate) objects: Vec<(String, Value)>,
}

/// The API versions `apply` reads: berth's own (`berth.dev/v1`, formerly `berth/v1`), and
/// Kubernetes RBAC's for its kinds.
const API_VERSIONS: [&str; 3] = ["berth.dev/v1", "berth/v1", "rbac.authorization.k8s.io/v1"];

pub(crate) fn plan_document(
    n: usize,
    doc: &Value,
    org_flag: Option<&str>,
    ctx_org: Option<&str>,
) -> anyhow::Result<Planned> {
    let bad = |m: String| -> anyhow::Error { Usage(format!("document {n}: {m}")).into() };
    let kind = doc["kind"].as_str().ok_or_else(|| {
        bad(
            "kind is missing (Role, ClusterRole, RoleBinding, ClusterRoleBinding or Binding)"
                .into(),
        )
    })?;
    const KINDS: [&str; 5] = [
        "Role",
        "ClusterRole",
        "RoleBinding",
        "ClusterRoleBinding",
        "Binding",
    ];
    if !KINDS.contains(&kind) {
        return Err(bad(format!(
            "kind must be Role, ClusterRole, RoleBinding, ClusterRoleBinding or Binding, not {kind}"
        )));
    }
    // Absent, berth's own version is meant.
    match doc["apiVersion"].as_str() {
        None => {}
        Some(v) if API_VERSIONS.contains(&v) => {}
        Some(v) => {
            return Err(bad(format!(
                "apiVersion {v} is not one berth reads ({})",
                API_VERSIONS.join(", ")
            )));
        }
    }
    let name = doc["metadata"]["name"]
        .as_str()
        .ok_or_else(|| bad("metadata.name is missing".into()))?
        .to_owned();
    let org = doc["metadata"]["org"]
        .as_str()
        .or(org_flag)
        .or(ctx_org)
        .map(str::to_owned)
        .ok_or_else(|| bad("no organization (metadata.org, --org, or the context's)".into()))?;
    let text = |v: &Value, field: &str| -> anyhow::Result<Option<String>> {
        match &v[field] {
            Value::Null => Ok(None),
            Value::String(s) => Ok(Some(s.clone())),
            _ => Err(bad(format!("{field} must be a string"))),
        }
    };
    let (api_kind, objects) = match kind {
        "Role" | "ClusterRole" => {
            let Some(list) = doc["rules"].as_array() else {
                return Err(bad(
                    "rules must be a list of {resources, verbs, resourceNames}".into(),
                ));
            };
            let mut rules = Vec::new();
            for (j, r) in list.iter().enumerate() {
                rules.push(rule_of(r).map_err(|m| bad(format!("rules[{j}]: {m}")))?);
            }
            ("role", vec![(name.clone(), json!({ "rules": rules }))])
        }
        "Binding" => {
            let role = text(doc, "role")?.ok_or_else(|| bad("role is missing".into()))?;
            let subject = text(doc, "subject")?.ok_or_else(|| {
                bad("subject is missing (robot/NAME, user/NAME or group/NAME)".into())
            })?;
            let mut body = json!({ "role": role, "subject": subject });
            for k in ["namespace", "repository"] {
                if let Some(v) = text(doc, k)? {
                    body[k] = json!(v);
                }
            }
            ("binding", vec![(name.clone(), body)])
        }
        "RoleBinding" | "ClusterRoleBinding" => {
            let role_ref = &doc["roleRef"];
            match role_ref["kind"].as_str() {
                Some("Role" | "ClusterRole") => {}
                Some(k) => {
                    return Err(bad(format!(
                        "roleRef.kind must be Role or ClusterRole, not {k}"
                    )));
                }
                None => return Err(bad("roleRef.kind is missing (Role or ClusterRole)".into())),
            }
            let role =
                text(role_ref, "name")?.ok_or_else(|| bad("roleRef.name is missing".into()))?;
            // A RoleBinding is scoped to its namespace (a berth namespace); without one, and for
            // a ClusterRoleBinding, to the whole organization.
            let namespace = match kind {
                "RoleBinding" => text(&doc["metadata"], "namespace")?,
                _ => None,
            };
            let Some(subjects) = doc["subjects"].as_array().filter(|l| !l.is_empty()) else {
                return Err(bad("subjects must list at least one {kind, name}".into()));
            };
            let mut objects = Vec::new();
            for (j, sub) in subjects.iter().enumerate() {
                let prefix = match sub["kind"].as_str() {
                    Some("Robot" | "ServiceAccount") => "robot",
                    Some("User") => "user",
                    Some("Group") => "group",
                    Some(k) => {
                        return Err(bad(format!(
                            "subjects[{j}].kind must be Robot, ServiceAccount, User or Group, not {k}"
                        )));
                    }
                    None => return Err(bad(format!("subjects[{j}].kind is missing"))),
                };
                let who = text(sub, "name")?
                    .ok_or_else(|| bad(format!("subjects[{j}].name is missing")))?;
                // `acme/deployer` and `deployer` name the same robot of org acme; a group's
                // name is the provider's, whole.
                let who = if prefix == "group" {
                    who
                } else {
                    who.strip_prefix(&format!("{org}/"))
                        .unwrap_or(&who)
                        .to_owned()
                };
                let mut body = json!({ "role": role, "subject": format!("{prefix}/{who}") });
                if let Some(ns) = &namespace {
                    body["namespace"] = json!(ns);
                }
                // One binding per subject; with several, each is named after its subject.
                let object = if subjects.len() == 1 {
                    name.clone()
                } else {
                    format!("{name}.{who}")
                };
                objects.push((object, body));
            }
            ("binding", objects)
        }
        other => {
            return Err(bad(format!(
                "kind must be Role, ClusterRole, RoleBinding, ClusterRoleBinding or Binding, not {other}"
            )));
        }
    };
    Ok(Planned {
        kind: api_kind,
        shown_kind: kind.to_ascii_lowercase(),
        org,
        name,
        objects,
    })
}

/// One rule: `resources`, `verbs`, and `resourceNames` (Kubernetes) or `names` (berth);
/// `apiGroups` is allowed and ignored.
fn rule_of(r: &Value) -> Result<Rule, String> {
    let list = |field: &str| -> Result<Vec<String>, String> {
        match &r[field] {
            Value::Null => Ok(Vec::new()),
            Value::Array(a) => a
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| format!("{field} must be a list of strings"))
                })
                .collect(),
            _ => Err(format!("{field} must be a list of strings")),
        }
    };
    if let Some(obj) = r.as_object() {
        for k in obj.keys() {
            if !["resources", "verbs", "names", "resourceNames", "apiGroups"].contains(&k.as_str())
            {
                return Err(format!(
                    "unknown field {k} (resources, verbs, resourceNames)"
                ));
            }
        }
    } else {
        return Err("must be a mapping {resources, verbs, resourceNames}".into());
    }
    let mut names = list("names")?;
    names.extend(list("resourceNames")?);
    let rule = Rule {
        resources: list("resources")?,
        verbs: list("verbs")?,
        names,
    };
    rule.validate()?;
    Ok(rule)
}

/// Creates or replaces one object unless it is already as asked; the verdict.
async fn put(
    client: &crate::client::Client,
    kind: &str,
    org: &str,
    name: &str,
    body: &Value,
) -> anyhow::Result<&'static str> {
    let path = format!("/orgs/{org}/{kind}s/{name}");
    let current = match client.api("GET", &path, None, &[]).await {
        Ok(v) => Some(v),
        Err(ClientError::Status { status: 404, .. }) => None,
        Err(e) => return Err(e.into()),
    };
    let same = current.as_ref().is_some_and(|cur| match kind {
        "role" => cur["rules"] == body["rules"],
        _ => ["role", "subject", "namespace", "repository"]
            .iter()
            .all(|k| cur[*k] == body[*k]),
    });
    if same {
        return Ok("unchanged");
    }
    client
        .api("PUT", &path, Some(body), &[])
        .await
        .with_context(|| format!("{kind}/{name}"))?;
    Ok(if current.is_some() {
        "configured"
    } else {
        "created"
    })
}
