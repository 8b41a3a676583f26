//! `berth repo`: the repositories the caller may pull.
use std::path::Path;

use serde_json::{Value, json};

use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RepoCommand {
    /// List the repositories you may pull.
    #[command(after_help = "Example:\n  berth repo list")]
    #[command(visible_alias = "ls")]
    List,
}

/// `repo list`: the catalog, with the context's credentials as Basic auth on `/v2` (berth accepts
/// it there), page by page.
pub(super) async fn repo(
    cmd: &RepoCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let RepoCommand::List = cmd;
    let (c, _) = context::client(cfg_path, verbose).await?;
    const PAGE: usize = 1000;
    let mut repos: Vec<Value> = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let path = match &last {
            Some(l) => format!("/_catalog?n={PAGE}&last={l}"),
            None => format!("/_catalog?n={PAGE}"),
        };
        let page = c.registry("GET", &path, "registry:catalog:*").await?;
        let names = page["repositories"].as_array().cloned().unwrap_or_default();
        let done = names.len() < PAGE;
        last = names.last().and_then(|v| v.as_str()).map(str::to_owned);
        repos.extend(names.into_iter().map(|n| json!({ "name": n })));
        if done {
            break;
        }
    }
    print(
        format,
        &json!({ "repositories": repos }),
        "repositories",
        &[("REPOSITORY", "name")],
    )
}
