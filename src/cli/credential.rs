//! `berth credential`: an organization's credentials and trusts, for expiry and hygiene.
use std::path::Path;

use serde_json::{Value, json};

use super::common::{credentials, org_of};
use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CredentialCommand {
    /// List the organization's robot tokens, robot API keys, registry tokens and trusts with
    /// expiry and last use; the filters keep those that need attention.
    #[command(
        after_help = "Example:\n  berth credential list --expiring-within 14d --unused-for 90d"
    )]
    #[command(visible_alias = "ls")]
    List {
        /// Keep credentials that expire (or expired) within this time.
        #[arg(long, value_name = "DURATION")]
        expiring_within: Option<String>,
        /// Keep credentials (and trusts) not used for this long; never used counts from creation.
        #[arg(long, value_name = "DURATION")]
        unused_for: Option<String>,
    },
}

pub(super) async fn credential(
    cmd: &CredentialCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let org = org_of(org, ctx_org)?;
    match cmd {
        CredentialCommand::List {
            expiring_within,
            unused_for,
        } => {
            let mut q = Vec::new();
            if let Some(e) = expiring_within {
                q.push(format!("expiringWithin={e}"));
            }
            if let Some(u) = unused_for {
                q.push(format!("unusedFor={u}"));
            }
            let path = format!("/orgs/{org}/credentials?{}", q.join("&"));
            let mut v = credentials(c.api("GET", &path, None, &[]).await?, "credentials");
            if let Some(list) = v["credentials"].as_array_mut() {
                for cr in list {
                    cr["why"] = json!(
                        cr["reasons"]
                            .as_array()
                            .map(|r| r
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", "))
                            .unwrap_or_default()
                    );
                }
            }
            let columns = [
                ("KIND", "kind"),
                ("OWNER", "owner"),
                ("NAME", "name"),
                ("EXPIRES", "expires"),
                ("LAST USED", "lastUsedAt"),
                ("STATUS", "status"),
                ("WHY", "why"),
            ];
            print(format, &v, "credentials", &columns)
        }
    }
}
