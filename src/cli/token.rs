//! `berth robot token`: a robot's tokens.

use serde_json::json;

use super::common::{
    TOKEN_COLUMNS, credentials, done, emit_secret, refuse_existing, robot_is_bound,
    rotate_robot_token, warn_unbound,
};
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token: writes {"accessId", "token"} to --output (mode 0600) or stdout with `-`.
    #[command(
        after_help = "Example:\n  berth robot token create ci-bot ci --expires-in 90d --output token.json"
    )]
    Create {
        /// The robot.
        robot: String,
        /// A name for the token, unique among the robot's tokens.
        name: String,
        /// Lifetime, e.g. 90d (default: does not expire).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// File to write the token to, or `-` for stdout.
        #[arg(long, value_name = "FILE|-")]
        output: Option<String>,
        /// Replace an existing --output file that holds another credential (it may be the only
        /// copy of that secret).
        #[arg(long)]
        force: bool,
    },
    /// Rotate a token: a new secret with the same accessId (a pull secret changes only its
    /// password); the old secret works until --overlap ends.
    #[command(
        after_help = "Example:\n  berth robot token rotate ci-bot ci --overlap 24h --output token.json"
    )]
    Rotate {
        /// The robot.
        robot: String,
        /// The token's name or id.
        name: String,
        /// How long the old secret keeps working (0: it stops now).
        #[arg(long, value_name = "DURATION", default_value = "24h")]
        overlap: String,
        /// File to write the token to, or `-` for stdout.
        #[arg(long, value_name = "FILE|-")]
        output: Option<String>,
    },
    /// List a robot's tokens (no secrets: created, expires, last used).
    #[command(after_help = "Example:\n  berth robot token list ci-bot")]
    #[command(visible_alias = "ls")]
    List {
        /// The robot.
        robot: String,
    },
    /// Delete a robot token by name or id; it stops working within 30 s.
    #[command(after_help = "Example:\n  berth robot token delete ci-bot ci-token")]
    Delete {
        /// The robot.
        robot: String,
        /// The token's name or id (its accessId).
        id: String,
    },
}

/// `robot token …` on robots of `org`.
pub(super) async fn run(
    cmd: &TokenCommand,
    c: &crate::client::Client,
    org: &str,
    format: Format,
) -> anyhow::Result<()> {
    let base = format!("/orgs/{org}/robots");
    match cmd {
        TokenCommand::Create {
            robot,
            name,
            expires_in,
            output,
            force,
        } => {
            refuse_existing(output.as_deref(), *force)?;
            let v = c
                .api(
                    "POST",
                    &format!("{base}/{robot}/tokens"),
                    Some(&json!({ "name": name, "expiresIn": expires_in })),
                    &[],
                )
                .await?;
            // A token of a robot without bindings works but may do nothing: say so (a
            // caller who may not list bindings gets no warning rather than an error).
            if let Ok(false) = robot_is_bound(c, org, robot).await {
                warn_unbound(robot);
            }
            // Seed 000's token file: exactly {"accessId", "token"}.
            let file = json!({ "accessId": v["accessId"], "token": v["token"] });
            let what = format!(
                "token {name:?} of robot {robot:?} (access id {})",
                v["accessId"].as_str().unwrap_or("")
            );
            emit_secret(output.as_deref(), &file, &what)
        }
        TokenCommand::Rotate {
            robot,
            name,
            overlap,
            output,
        } => {
            let file = rotate_robot_token(c, org, robot, name, overlap).await?;
            emit_secret(
                output.as_deref(),
                &file,
                &format!(
                    "token {name:?} of robot {robot:?} (access id {})",
                    file["accessId"].as_str().unwrap_or("")
                ),
            )
        }
        TokenCommand::List { robot } => print(
            format,
            &credentials(
                c.api("GET", &format!("{base}/{robot}/tokens"), None, &[])
                    .await?,
                "tokens",
            ),
            "tokens",
            &TOKEN_COLUMNS,
        ),
        TokenCommand::Delete { robot, id } => done(
            c.api("DELETE", &format!("{base}/{robot}/tokens/{id}"), None, &[])
                .await,
            &format!("token {id} deleted"),
        ),
    }
}
