//! `berth member`: an organization's members and their roles.
use std::path::Path;

use serde_json::json;

use super::common::{done, org_of};
use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MemberCommand {
    /// Add a user to the organization, or change their role.
    #[command(after_help = "Example:\n  berth member add alice --role owner")]
    Add {
        /// The user.
        user: String,
        /// owner (manages the organization) or member.
        #[arg(long, default_value = "member", value_parser = ["member", "owner"])]
        role: String,
    },
    /// Remove a user from the organization.
    #[command(after_help = "Example:\n  berth member remove alice")]
    Remove {
        /// The user.
        user: String,
    },
    /// List the organization's members.
    #[command(after_help = "Example:\n  berth member list --org acme")]
    List,
}

pub(super) async fn member(
    cmd: &MemberCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let org = org_of(org, ctx_org)?;
    let columns = [("USER", "user"), ("ROLE", "role")];
    match cmd {
        MemberCommand::Add { user, role } => {
            let v = c
                .api(
                    "PUT",
                    &format!("/orgs/{org}/members/{user}"),
                    Some(&json!({ "role": role })),
                    &[],
                )
                .await?;
            print(format, &v, "", &columns)
        }
        MemberCommand::Remove { user } => done(
            c.api("DELETE", &format!("/orgs/{org}/members/{user}"), None, &[])
                .await,
            &format!("{user:?} removed from {org:?}"),
        ),
        MemberCommand::List => print(
            format,
            &c.api("GET", &format!("/orgs/{org}/members"), None, &[])
                .await?,
            "members",
            &columns,
        ),
    }
}
