//! `berth apply -f FILE|-`: roles and bindings from multi-document YAML, idempotently, printing
//! `created`, `configured` or `unchanged` per object (like `kubectl apply`).
//!
//! ```yaml
//! apiVersion: berth/v1
//! kind: Role
//! metadata: {name: puller, org: acme}
//! rules: [{resources: [repositories], verbs: [pull], names: ["acme/pub-*"]}]
//! ---
//! apiVersion: berth/v1
//! kind: Binding
//! metadata: {name: deployer}
//! role: puller
//! subject: robot/deployer
//! namespace: acme        # or repository: GLOB; neither: the whole organization
//! ```

use std::io::Read as _;
use std::path::Path;

use anyhow::Context as _;
use serde::Deserialize as _;
use serde_json::{Value, json};

use super::Usage;
use super::context;
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
    let mut docs = Vec::new();
    for (i, doc) in serde_norway::Deserializer::from_str(&text).enumerate() {
        let v = Value::deserialize(doc).map_err(|e| Usage(format!("document {}: {e}", i + 1)))?;
        if !v.is_null() {
            docs.push(v);
        }
    }
    let (client, ctx_org) = context::client(cfg_path, verbose).await?;
    // Check every document before changing anything.
    let mut plan = Vec::new();
    for (i, doc) in docs.iter().enumerate() {
        let n = i + 1;
        let name = doc["metadata"]["name"]
            .as_str()
            .ok_or_else(|| Usage(format!("document {n}: metadata.name is missing")))?;
        let org = doc["metadata"]["org"]
            .as_str()
            .or(org_flag)
            .map(str::to_owned)
            .or_else(|| ctx_org.clone())
            .ok_or_else(|| {
                Usage(format!(
                    "document {n}: no organization (metadata.org, --org, or the context's)"
                ))
            })?;
        let (kind, body) = match doc["kind"].as_str() {
            Some("Role") => {
                let rules: Vec<Rule> = serde_json::from_value(doc["rules"].clone())
                    .map_err(|e| Usage(format!("document {n}: rules: {e}")))?;
                ("role", json!({ "rules": rules }))
            }
            Some("Binding") => {
                let field = |k: &str| doc[k].as_str().map(str::to_owned);
                let role =
                    field("role").ok_or_else(|| Usage(format!("document {n}: role is missing")))?;
                let subject = field("subject")
                    .ok_or_else(|| Usage(format!("document {n}: subject is missing")))?;
                let mut body = json!({ "role": role, "subject": subject });
                for k in ["namespace", "repository"] {
                    if let Some(v) = field(k) {
                        body[k] = json!(v);
                    }
                }
                ("binding", body)
            }
            other => {
                return Err(Usage(format!(
                    "document {n}: kind must be Role or Binding, not {other:?}"
                ))
                .into());
            }
        };
        plan.push((kind, org, name.to_owned(), body));
    }
    for (kind, org, name, body) in plan {
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
        let verdict = if same {
            "unchanged"
        } else {
            client
                .api("PUT", &path, Some(&body), &[])
                .await
                .with_context(|| format!("{kind}/{name}"))?;
            if current.is_some() {
                "configured"
            } else {
                "created"
            }
        };
        crate::cli_print(&format!("{kind}/{name} {verdict}"));
    }
    Ok(())
}
