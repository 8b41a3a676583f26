//! `berth tag`: a repository's tags.
use std::path::Path;

use serde_json::{Value, json};

use super::common::done;
use super::context;
use super::errors::Usage;
use super::output::{Format, print};
use super::repo::{TAG_COLUMNS, tag_row, tags_of};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TagCommand {
    /// List the tags of a repository with digest, image size and push time (newest first).
    #[command(
        after_help = "Examples:\n  berth tag list acme/app\n  berth tag list acme/app --sort name --filter rc"
    )]
    #[command(visible_alias = "ls")]
    List {
        /// The repository, such as acme/app.
        repository: String,
        /// How the tags sort: pushed (newest first) or name.
        #[arg(long, default_value = "pushed", value_parser = ["pushed", "name"])]
        sort: String,
        /// Only tags that contain this text (any case).
        #[arg(long)]
        filter: Option<String>,
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
        TagCommand::List {
            repository,
            sort,
            filter,
        } => {
            let (view, tags) = tags_of(&c, repository, sort, filter.as_deref()).await?;
            let rows: Vec<Value> = match format {
                Format::Table => tags.iter().map(tag_row).collect(),
                _ => tags,
            };
            print(
                format,
                &json!({ "name": view["name"], "tags": rows }),
                "tags",
                &TAG_COLUMNS,
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
