//! `berth audit`: the audit trail.
use std::path::Path;

use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// List audit events, newest first.
    #[command(after_help = "Example:\n  berth audit list --since 24h --actor robot:acme/ci-bot")]
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
    } = cmd;
    let (c, _) = context::client(cfg_path, verbose).await?;
    let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
    for (k, v) in [("since", since), ("actor", actor), ("action", action)] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    let query = serde_urlencoded::to_string(&q).unwrap_or_default();
    let v = c.api("GET", &format!("/audit?{query}"), None, &[]).await?;
    let columns = [
        ("TIME", "time"),
        ("ACTOR", "actor"),
        ("ACTION", "action"),
        ("OUTCOME", "outcome"),
        ("TARGET", "target"),
    ];
    print(format, &v, "events", &columns)
}
