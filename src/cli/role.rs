//! `berth role`: built-in and custom roles.
use std::path::Path;

use serde_json::json;

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
    let columns = [("NAME", "name"), ("BUILTIN", "builtin"), ("RULES", "rules")];
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
            print(format, &v, "", &columns)
        }
        RoleCommand::List => print(
            format,
            &c.api("GET", &format!("/orgs/{org}/roles"), None, &[])
                .await?,
            "roles",
            &columns,
        ),
        RoleCommand::Get { name } => {
            let v = c
                .api("GET", &format!("/orgs/{org}/roles/{name}"), None, &[])
                .await?;
            print(format, &exportable(format, v), "", &columns)
        }
        RoleCommand::Delete { name } => done(
            c.api("DELETE", &format!("/orgs/{org}/roles/{name}"), None, &[])
                .await,
            &format!("role {name:?} deleted"),
        ),
    }
}
