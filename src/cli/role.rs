//! `berth role`: built-in and custom roles.
use std::path::Path;

use serde_json::{Value, json};

use super::common::{done, exportable, org_of};
use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RoleCommand {
    /// Create or replace a custom role with one rule.
    #[command(
        after_help = "Example:\n  berth role create puller --verb pull --name \"acme/pub-*\""
    )]
    Create {
        /// The role's name.
        name: String,
        /// A verb the role allows (pull, push, delete, list, get, create, update or *); repeat for several.
        #[arg(long = "verb", required = true, value_name = "VERB")]
        verbs: Vec<String>,
        #[arg(
            long = "resource",
            default_value = "repositories",
            value_name = "RESOURCE"
        )]
        /// A resource the verbs apply to (repositories, robots, credentials, roles, bindings or *); repeat for several.
        resources: Vec<String>,
        /// Repository globs the rule is limited to (default: all).
        #[arg(long = "name", value_name = "GLOB")]
        names: Vec<String>,
    },
    /// List roles: the built-in ones and the organization's own.
    #[command(after_help = "Example:\n  berth role list")]
    #[command(visible_alias = "ls")]
    List,
    /// Show a role's rules.
    #[command(after_help = "Example:\n  berth role get puller -o yaml")]
    Get {
        /// The role's name.
        name: String,
    },
    /// Delete a custom role.
    #[command(after_help = "Example:\n  berth role delete puller")]
    Delete {
        /// The role's name.
        name: String,
    },
}

pub(super) async fn role(
    cmd: &RoleCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let org = org_of(org, ctx_org)?;
    // The table shows each rule as words (`pull,push on repositories`), not as JSON.
    let columns = [
        ("NAME", "name"),
        ("BUILTIN", "builtin"),
        ("RULES", "ruleText"),
    ];
    match cmd {
        RoleCommand::Create {
            name,
            verbs,
            resources,
            names,
        } => {
            let rules = json!([{ "resources": resources, "verbs": verbs, "names": names }]);
            let v = c
                .api(
                    "PUT",
                    &format!("/orgs/{org}/roles/{name}"),
                    Some(&json!({ "rules": rules })),
                    &[],
                )
                .await?;
            print(format, &readable(format, v), "", &columns)
        }
        RoleCommand::List => {
            let mut v = c
                .api("GET", &format!("/orgs/{org}/roles"), None, &[])
                .await?;
            if format == Format::Table
                && let Some(list) = v["roles"].as_array_mut()
            {
                for r in list {
                    r["ruleText"] = json!(rule_text(&r["rules"]));
                }
            }
            print(format, &v, "roles", &columns)
        }
        RoleCommand::Get { name } => {
            let v = c
                .api("GET", &format!("/orgs/{org}/roles/{name}"), None, &[])
                .await?;
            print(
                format,
                &readable(format, exportable(format, v)),
                "",
                &columns,
            )
        }
        RoleCommand::Delete { name } => done(
            c.api("DELETE", &format!("/orgs/{org}/roles/{name}"), None, &[])
                .await,
            &format!("role {name:?} deleted"),
        ),
    }
}

/// A role for the table: its rules in words.
fn readable(format: Format, mut v: Value) -> Value {
    if format == Format::Table {
        v["ruleText"] = json!(rule_text(&v["rules"]));
    }
    v
}

/// Rules in words, one per `;`: `pull,push on repositories`, `get,list on robots named ci-*`.
fn rule_text(rules: &Value) -> String {
    let words = |v: &Value| {
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .unwrap_or_default()
    };
    rules
        .as_array()
        .map(|rules| {
            rules
                .iter()
                .map(|r| {
                    let names = words(&r["names"]);
                    let mut t = format!("{} on {}", words(&r["verbs"]), words(&r["resources"]));
                    if !names.is_empty() {
                        t.push_str(&format!(" named {names}"));
                    }
                    t
                })
                .collect::<Vec<_>>()
                .join("; ")
        })
        .unwrap_or_default()
}
