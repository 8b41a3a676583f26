//! `berth audit`: the audit trail.
use std::path::Path;

use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// List audit events, newest first: yours (a server admin: everyone's), or with --org all of
    /// an organization's (its owners, and roles that grant list on audit).
    #[command(
        after_help = "Example:\n  berth audit list --since 24h --actor robot:acme/ci-bot\n  berth audit list --org acme --action binding.put"
    )]
    #[command(visible_alias = "ls")]
    List {
        /// Only events since this long ago (15m, 24h) or this Unix time.
        #[arg(long)]
        since: Option<String>,
        /// Only events of this actor, such as user:alice or robot:acme/ci-bot.
        #[arg(long)]
        actor: Option<String>,
        /// Only this action, such as login, token.issue or binding.put.
        #[arg(long)]
        action: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Everything that happened in this organization, by anyone.
        #[arg(long)]
        org: Option<String>,
    },
}

pub(super) async fn audit(
    cmd: &AuditCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let AuditCommand::List {
        since,
        actor,
        action,
        limit,
        org,
    } = cmd;
    let (c, _) = context::client(cfg_path, verbose).await?;
    let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
    for (k, v) in [("since", since), ("actor", actor), ("action", action)] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    let query = serde_urlencoded::to_string(&q).unwrap_or_default();
    let path = match org {
        Some(org) => format!("/orgs/{org}/audit?{query}"),
        None => format!("/audit?{query}"),
    };
    let v = c.api("GET", &path, None, &[]).await?;
    let columns = [
        ("TIME", "time"),
        ("ACTOR", "actor"),
        ("ACTION", "action"),
        ("OUTCOME", "outcome"),
        ("TARGET", "target"),
    ];
    print(format, &v, "events", &columns)
}
