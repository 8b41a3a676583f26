//! `berth apikey`: the caller's own API keys.
use std::path::Path;

use serde_json::json;

use super::common::{
    TOKEN_COLUMNS, credentials, done, emit_secret, org_of, refuse_existing, rotate,
};
use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ApiKeyCommand {
    /// Create an API key (yours, or a robot's with --robot): writes {"name", "apikey"}.
    #[command(
        after_help = "Example:\n  berth apikey create k8s --robot ci-bot --output apikey.json"
    )]
    Create {
        /// A name for the key, unique among yours (or the robot's).
        name: String,
        /// A key of this robot instead of your own.
        #[arg(long)]
        robot: Option<String>,
        /// Lifetime, such as 90d or 24h; absent, the key does not expire.
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// Write {"name","apikey"} here (mode 0600); `-` or absent: standard output.
        #[arg(long, value_name = "FILE|-")]
        output: Option<String>,
        /// Replace an existing --output file that holds another credential (it may be the only
        /// copy of that secret).
        #[arg(long)]
        force: bool,
    },
    /// List API keys (yours, or a robot's with --robot); no secrets.
    #[command(after_help = "Example:\n  berth apikey list")]
    #[command(visible_alias = "ls")]
    List {
        /// A key of this robot instead of your own.
        #[arg(long)]
        robot: Option<String>,
    },
    /// Rotate an API key: a new secret for the same key; the old one works for --overlap.
    #[command(
        after_help = "Example:\n  berth apikey rotate k8s --robot ci-bot --overlap 24h --output apikey.json"
    )]
    Rotate {
        /// The key's name or id.
        name: String,
        /// A key of this robot instead of your own.
        #[arg(long)]
        robot: Option<String>,
        /// How long the old secret keeps working (0: it stops now).
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        overlap: String,
        /// Write {"name","apikey"} here (mode 0600); `-` or absent: standard output.
        #[arg(long, value_name = "FILE|-")]
        output: Option<String>,
    },
    /// Delete an API key by name or id.
    #[command(
        after_help = "Example:\n  berth apikey delete laptop\n  berth apikey delete k8s --robot reader"
    )]
    Delete {
        /// The key's name or id.
        id: String,
        /// A key of this robot instead of your own.
        #[arg(long)]
        robot: Option<String>,
    },
}

pub(super) async fn apikey(
    cmd: &ApiKeyCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let base = |robot: &Option<String>| -> anyhow::Result<String> {
        Ok(match robot {
            Some(r) => format!("/orgs/{}/robots/{r}/apikeys", org_of(org, ctx_org.clone())?),
            None => "/apikeys".to_owned(),
        })
    };
    match cmd {
        ApiKeyCommand::Create {
            name,
            robot,
            expires_in,
            output,
            force,
        } => {
            refuse_existing(output.as_deref(), *force)?;
            let v = c
                .api(
                    "POST",
                    &base(robot)?,
                    Some(&json!({ "name": name, "expiresIn": expires_in })),
                    &[],
                )
                .await?;
            emit_secret(
                output.as_deref(),
                &json!({ "name": v["name"], "apikey": v["apikey"] }),
                &format!("API key {name:?}"),
            )
        }
        ApiKeyCommand::List { robot } => print(
            format,
            &credentials(c.api("GET", &base(robot)?, None, &[]).await?, "apikeys"),
            "apikeys",
            &TOKEN_COLUMNS,
        ),
        ApiKeyCommand::Rotate {
            name,
            robot,
            overlap,
            output,
        } => {
            let v = rotate(
                &c,
                &format!("{}/{name}/rotate", base(robot)?),
                &[],
                overlap,
                &format!("API key {name:?}"),
            )
            .await?;
            emit_secret(
                output.as_deref(),
                &json!({ "name": v["name"], "apikey": v["apikey"] }),
                &format!("API key {name:?}"),
            )
        }
        ApiKeyCommand::Delete { id, robot } => done(
            c.api("DELETE", &format!("{}/{id}", base(robot)?), None, &[])
                .await,
            &format!("API key {id} deleted"),
        ),
    }
}
