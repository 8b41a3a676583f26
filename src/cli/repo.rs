//! `berth repo`: the repositories the caller may pull; one repository's tags; deleting one.
use std::path::Path;

use serde_json::{Value, json};

use super::common::done;
use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RepoCommand {
    /// List the repositories you may pull.
    #[command(after_help = "Example:\n  berth repo list")]
    #[command(visible_alias = "ls")]
    List,
    /// One repository: its tags with digest, image size and push time, and what you may do.
    #[command(after_help = "Example:\n  berth repo get acme/app")]
    Get {
        /// The repository, such as acme/app.
        repository: String,
    },
    /// Delete a repository with every tag and manifest (its layers go with the next GC unless
    /// another repository uses them).
    #[command(after_help = "Example:\n  berth repo delete acme/old-app")]
    Delete {
        /// The repository, such as acme/old-app.
        repository: String,
    },
}

/// The organization a repository belongs to: the owner of its namespace (the name's first
/// segment).
pub(super) async fn org_of_repository(
    c: &crate::client::Client,
    repository: &str,
) -> anyhow::Result<String> {
    let Some((ns, _)) = repository.split_once('/') else {
        return Err(super::errors::Usage(format!(
            "{repository:?} names no namespace: write NAMESPACE/REPOSITORY, such as acme/{repository}"
        ))
        .into());
    };
    let v = c
        .api("GET", &format!("/namespaces/{ns}"), None, &[])
        .await?;
    Ok(v["org"].as_str().unwrap_or(ns).to_owned())
}

/// Every tag of `repository` (page by page, newest push first unless `sort` says `name`), with
/// the fields of the repository view; and the view of the first page (name, actions).
pub(super) async fn tags_of(
    c: &crate::client::Client,
    repository: &str,
    sort: &str,
    filter: Option<&str>,
) -> anyhow::Result<(Value, Vec<Value>)> {
    let org = org_of_repository(c, repository).await?;
    let mut tags = Vec::new();
    let mut page = 1u64;
    let filter = filter
        .map(|f| format!("&q={}", urlencoding(f)))
        .unwrap_or_default();
    loop {
        let v = c
            .api(
                "GET",
                &format!("/orgs/{org}/repositories/{repository}?sort={sort}&page={page}{filter}"),
                None,
                &[],
            )
            .await?;
        tags.extend(v["tags"].as_array().cloned().unwrap_or_default());
        match v["next"].as_u64() {
            Some(next) if next > page => page = next,
            _ => return Ok((v, tags)),
        }
    }
}

/// Percent-encodes a query value.
fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// A tag's row for a table: its size readable, its digest shortened, an index's platforms.
pub(super) fn tag_row(t: &Value) -> Value {
    let digest = t["digest"].as_str().unwrap_or("");
    let platforms: Vec<&str> = t["platforms"]
        .as_array()
        .map(|a| a.iter().filter_map(|p| p["platform"].as_str()).collect())
        .unwrap_or_default();
    json!({
        "tag": t["tag"],
        "digest": digest.get(..19).unwrap_or(digest),
        "size": t["size"].as_u64().map(crate::types::readable_size),
        "pushed": t["pushed"],
        "platforms": if platforms.is_empty() { Value::Null } else { json!(platforms.join(",")) },
    })
}

pub(super) const TAG_COLUMNS: [(&str, &str); 5] = [
    ("TAG", "tag"),
    ("DIGEST", "digest"),
    ("SIZE", "size"),
    ("PUSHED", "pushed"),
    ("PLATFORMS", "platforms"),
];

/// `repo list`: the catalog, with the context's credentials as Basic auth on `/v2` (berth accepts
/// it there), page by page. `repo get` and `repo delete` speak the management API.
pub(super) async fn repo(
    cmd: &RepoCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, _) = context::client(cfg_path, verbose).await?;
    match cmd {
        RepoCommand::List => list(&c, format).await,
        RepoCommand::Get { repository } => {
            let (view, tags) = tags_of(&c, repository, "pushed", None).await?;
            match format {
                Format::Table => {
                    let actions: Vec<&str> = view["actions"]
                        .as_array()
                        .map(|a| a.iter().filter_map(Value::as_str).collect())
                        .unwrap_or_default();
                    crate::cli_print(&format!(
                        "Repository: {}\nOrganization: {}\nYou may: {}\nTags: {}\n",
                        crate::iam::escape_text(repository),
                        crate::iam::escape_text(view["org"].as_str().unwrap_or("")),
                        actions.join(", "),
                        tags.len()
                    ));
                    let rows: Vec<Value> = tags.iter().map(tag_row).collect();
                    print(format, &json!({ "tags": rows }), "tags", &TAG_COLUMNS)
                }
                _ => print(
                    format,
                    &json!({
                        "name": view["name"], "org": view["org"], "actions": view["actions"],
                        "tags": tags,
                    }),
                    "",
                    &[],
                ),
            }
        }
        RepoCommand::Delete { repository } => {
            let org = org_of_repository(&c, repository).await?;
            done(
                c.api(
                    "DELETE",
                    &format!("/orgs/{org}/repositories/{repository}"),
                    None,
                    &[],
                )
                .await,
                &format!("repository {repository} deleted"),
            )
        }
    }
}

async fn list(c: &crate::client::Client, format: Format) -> anyhow::Result<()> {
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
