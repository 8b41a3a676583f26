//! `berth tag`: a repository's tags.
use std::path::Path;

use serde_json::{Value, json};

use super::common::done;
use super::context;
use super::errors::Usage;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TagCommand {
    /// List the tags of a repository.
    #[command(after_help = "Example:\n  berth tag list acme/app")]
    #[command(visible_alias = "ls")]
    List {
        /// The repository, such as acme/app.
        repository: String,
    },
    /// Delete a tag (REPO:TAG); the manifest stays.
    #[command(after_help = "Example:\n  berth tag delete acme/app:old")]
    Delete {
        /// REPOSITORY:TAG, such as acme/app:old.
        reference: String,
    },
}

pub(super) async fn tag(
    cmd: &TagCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, _) = context::client(cfg_path, verbose).await?;
    match cmd {
        TagCommand::List { repository } => {
            let v = c
                .registry(
                    "GET",
                    &format!("/{repository}/tags/list"),
                    &format!("repository:{repository}:pull"),
                )
                .await?;
            let rows: Vec<Value> = v["tags"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|t| json!({ "tag": t }))
                .collect();
            print(
                format,
                &json!({ "name": v["name"], "tags": rows }),
                "tags",
                &[("TAG", "tag")],
            )
        }
        TagCommand::Delete { reference } => {
            let (repo, tag) = reference
                .rsplit_once(':')
                .ok_or_else(|| Usage(format!("{reference:?} is not REPO:TAG")))?;
            done(
                c.registry(
                    "DELETE",
                    &format!("/{repo}/manifests/{tag}"),
                    &format!("repository:{repo}:delete"),
                )
                .await,
                &format!("tag {reference} deleted"),
            )
        }
    }
}
