//! `berth org`: create, list, show and delete organizations.
use std::path::Path;

use serde_json::json;

use super::common::done;
use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum OrgCommand {
    /// Create an organization (and its namespace); you become its owner.
    #[command(after_help = "Example:\n  berth org create acme")]
    Create {
        /// The organization's name (also the name of its first namespace).
        name: String,
    },
    /// List your organizations.
    #[command(after_help = "Example:\n  berth org list -o json")]
    #[command(visible_alias = "ls")]
    List,
    /// Show an organization and its namespaces.
    #[command(after_help = "Example:\n  berth org get acme")]
    Get {
        /// The organization's name.
        name: String,
    },
    /// Delete an organization (owners).
    #[command(after_help = "Example:\n  berth org delete acme")]
    Delete {
        /// The organization's name.
        name: String,
    },
}

pub(super) async fn org(
    cmd: &OrgCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, _) = context::client(cfg_path, verbose).await?;
    match cmd {
        OrgCommand::Create { name } => {
            let v = c
                .api("POST", "/orgs", Some(&json!({ "name": name })), &[])
                .await?;
            print(format, &v, "", &[("NAME", "name"), ("CREATED", "created")])
        }
        OrgCommand::List => print(
            format,
            &c.api("GET", "/orgs", None, &[]).await?,
            "orgs",
            &[("NAME", "name"), ("CREATED", "created")],
        ),
        OrgCommand::Get { name } => print(
            format,
            &c.api("GET", &format!("/orgs/{name}"), None, &[]).await?,
            "",
            &[("NAME", "name"), ("CREATED", "created")],
        ),
        OrgCommand::Delete { name } => done(
            c.api("DELETE", &format!("/orgs/{name}"), None, &[]).await,
            &format!("organization {name:?} deleted"),
        ),
    }
}
