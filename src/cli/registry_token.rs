//! `berth registry-token`: an organization's registry tokens (login user name `token`).
use std::path::Path;

use serde_json::json;

use super::common::{credentials, done, emit_secret, org_of, refuse_existing, rotate};
use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RegistryTokenCommand {
    /// Create an organization-wide registry token (login user name `token`).
    #[command(
        after_help = "Example:\n  berth registry-token create --permanent --description \"cluster pulls\""
    )]
    Create {
        /// A name, unique in the organization, to list and delete it by.
        #[arg(long)]
        name: Option<String>,
        /// Allow push as well as pull.
        #[arg(long)]
        readwrite: bool,
        /// Never expire (otherwise the server's registry-token lifetime, 30 days by default).
        #[arg(long)]
        permanent: bool,
        /// What the token is for.
        #[arg(long)]
        description: Option<String>,
        /// Write the token file ({"token"}, mode 0600) here; `-` or absent: standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<String>,
        /// Replace an existing --output file that holds another credential (it may be the only
        /// copy of that secret).
        #[arg(long)]
        force: bool,
    },
    /// List the organization's registry tokens (no secrets).
    #[command(after_help = "Example:\n  berth registry-token list")]
    #[command(visible_alias = "ls")]
    List,
    /// Rotate a registry token: a new secret for the same token; the old one works for --overlap.
    #[command(
        after_help = "Example:\n  berth registry-token rotate cluster-pulls --overlap 1h --output token.json"
    )]
    Rotate {
        /// The token's name or id.
        id: String,
        /// How long the old secret keeps working (0: it stops now).
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        overlap: String,
        /// Write the token file ({"token"}, mode 0600) here; `-` or absent: standard output.
        #[arg(long, value_name = "FILE")]
        output: Option<String>,
    },
    /// Delete a registry token by name or id.
    #[command(after_help = "Example:\n  berth registry-token delete cluster-pulls")]
    Delete {
        /// The token's name or id.
        id: String,
    },
}

pub(super) async fn registry_token(
    cmd: &RegistryTokenCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let org = org_of(org, ctx_org)?;
    let headers = [("organization", org.as_str())];
    match cmd {
        RegistryTokenCommand::Create {
            name,
            readwrite,
            permanent,
            description,
            output,
            force,
        } => {
            refuse_existing(output.as_deref(), *force)?;
            let path = if *permanent {
                "/tokens?permanent=true"
            } else {
                "/tokens"
            };
            let v = c
                .api(
                    "POST",
                    path,
                    Some(&json!({ "name": name, "readwrite": readwrite, "description": description })),
                    &headers,
                )
                .await?;
            // A token file like the other secret-making commands' (the `token` login user name,
            // `pull-secret create -f` reads it), never a table cell; the rest goes to stderr.
            let _ = format;
            crate::cli_eprint(&format!(
                "registry token {} ({}, expires {}) for organization {org}",
                v["name"].as_str().or(v["id"].as_str()).unwrap_or(""),
                if *readwrite {
                    "read-write"
                } else {
                    "read-only"
                },
                v["expires"].as_str().unwrap_or("never"),
            ));
            emit_secret(
                output.as_deref(),
                &json!({ "token": v["token"], "id": v["id"], "name": v["name"] }),
                "registry token",
            )
        }
        RegistryTokenCommand::List => {
            let columns = [
                ("NAME", "name"),
                ("DESCRIPTION", "description"),
                ("READWRITE", "readwrite"),
                ("CREATED", "created"),
                ("EXPIRES", "expires"),
                ("LAST USED", "lastUsedAt"),
                ("FROM", "lastUsedFrom"),
                ("STATUS", "status"),
                ("ID", "id"),
            ];
            print(
                format,
                &credentials(c.api("GET", "/tokens", None, &headers).await?, "tokens"),
                "tokens",
                &columns,
            )
        }
        RegistryTokenCommand::Rotate {
            id,
            overlap,
            output,
        } => {
            let v = rotate(
                &c,
                &format!("/tokens/{id}/rotate"),
                &headers,
                overlap,
                &format!("registry token {id:?}"),
            )
            .await?;
            emit_secret(
                output.as_deref(),
                &json!({ "token": v["token"], "id": v["id"], "name": v["name"] }),
                "registry token",
            )
        }
        RegistryTokenCommand::Delete { id } => done(
            c.api("DELETE", &format!("/tokens/{id}"), None, &headers)
                .await,
            &format!("registry token {id} deleted"),
        ),
    }
}
