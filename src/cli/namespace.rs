//! `berth namespace`: an organization's namespaces.
use std::path::Path;

use serde_json::json;

use super::common::org_of;
use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum NamespaceCommand {
    /// Create a namespace in the organization.
    #[command(after_help = "Example:\n  berth namespace create acme-tools --public")]
    Create {
        /// The namespace's name (the first segment of its repositories' names).
        name: String,
        /// Let anyone pull from it without credentials.
        #[arg(long)]
        public: bool,
    },
    /// List the organization's namespaces.
    #[command(after_help = "Example:\n  berth namespace list --org acme")]
    #[command(visible_alias = "ls")]
    List,
    /// Allow or stop anonymous pulls.
    #[command(after_help = "Example:\n  berth namespace set-public acme-tools false")]
    SetPublic {
        /// The namespace's name (the first segment of its repositories' names).
        name: String,
        /// Let anyone pull from it without credentials.
        #[arg(action = clap::ArgAction::Set, value_parser = clap::value_parser!(bool))]
        public: bool,
    },
}

pub(super) async fn namespace(
    cmd: &NamespaceCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let columns = [("NAME", "name"), ("ORG", "org"), ("PUBLIC", "public")];
    match cmd {
        NamespaceCommand::Create { name, public } => {
            let org = org_of(org, ctx_org)?;
            let v = c
                .api(
                    "POST",
                    &format!("/orgs/{org}/namespaces"),
                    Some(&json!({ "name": name, "public": public })),
                    &[],
                )
                .await?;
            print(format, &v, "", &columns)
        }
        NamespaceCommand::List => {
            let org = org_of(org, ctx_org)?;
            print(
                format,
                &c.api("GET", &format!("/orgs/{org}/namespaces"), None, &[])
                    .await?,
                "namespaces",
                &columns,
            )
        }
        NamespaceCommand::SetPublic { name, public } => {
            let v = c
                .api(
                    "PATCH",
                    &format!("/namespaces/{name}"),
                    Some(&json!({ "public": public })),
                    &[],
                )
                .await?;
            print(format, &v, "", &columns)
        }
    }
}
