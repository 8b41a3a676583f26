//! `berth member`: an organization's members and their roles.
use std::path::Path;

use serde_json::json;

use super::common::{done, org_of};
use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MemberCommand {
    /// Change a member's role, or invite a user (a server admin adds them at once); the user
    /// joins with `berth member accept --org ORG`.
    #[command(after_help = "Example:\n  berth member add alice --role owner")]
    Add {
        /// The user.
        user: String,
        /// owner (manages the organization) or member.
        #[arg(long, default_value = "member", value_parser = ["member", "owner"])]
        role: String,
    },
    /// Accept your invitation to the organization (--org) and join it.
    #[command(after_help = "Example:\n  berth member accept --org acme")]
    Accept,
    /// List your invitations.
    #[command(after_help = "Example:\n  berth member invitations")]
    Invitations,
    /// Remove a user from the organization.
    #[command(after_help = "Example:\n  berth member remove alice")]
    Remove {
        /// The user.
        user: String,
    },
    /// List the organization's members.
    #[command(after_help = "Example:\n  berth member list --org acme")]
    #[command(visible_alias = "ls")]
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
    // The caller's invitations are of every organization: no --org needed.
    if let MemberCommand::Invitations = cmd {
        let v = c.api("GET", "/invitations", None, &[]).await?;
        return print(
            format,
            &v,
            "invitations",
            &[("ORG", "org"), ("ROLE", "role")],
        );
    }
    let org = org_of(org, ctx_org)?;
    let columns = [("USER", "user"), ("ROLE", "role")];
    match cmd {
        MemberCommand::Accept => {
            let v = c
                .api(
                    "POST",
                    &format!("/orgs/{org}/invitations/accept"),
                    None,
                    &[],
                )
                .await?;
            print(format, &v, "", &columns)
        }
        MemberCommand::Invitations => Ok(()),
        MemberCommand::Add { user, role } => {
            let v = c
                .api(
                    "PUT",
                    &format!("/orgs/{org}/members/{user}"),
                    Some(&json!({ "role": role })),
                    &[],
                )
                .await?;
            if v["status"] == "invited" {
                crate::cli_eprint(&format!(
                    "invited {user:?} to {org:?} as {role} (if the user exists); they join with `berth member accept --org {org}`"
                ));
            }
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
