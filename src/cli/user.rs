//! `berth user`: users (server admins manage them; a user sets their own password).
use std::path::Path;

use serde_json::json;

use super::common::done;
use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum UserCommand {
    /// Create a user (server admins); the password is read from stdin or the terminal.
    #[command(after_help = "Example:\n  echo \"$PW\" | berth user create alice --password-stdin")]
    Create {
        /// The user's name.
        name: String,
        /// Read the password from standard input (one line); otherwise you are asked.
        #[arg(long)]
        password_stdin: bool,
        /// Make the user a server admin.
        #[arg(long)]
        admin: bool,
    },
    /// List users (server admins).
    #[command(after_help = "Example:\n  berth user list")]
    #[command(visible_alias = "ls")]
    List,
    /// Delete a user with their memberships, bindings and keys.
    #[command(after_help = "Example:\n  berth user delete alice")]
    Delete {
        /// The user's name.
        name: String,
    },
    /// Set a user's password (your own, or anyone's as a server admin). Changing your own asks
    /// for the current password first; every session opened with the old one ends.
    #[command(
        after_help = "Example:\n  berth user passwd alice\n  printf '%s\\n%s\\n' \"$OLD\" \"$NEW\" | berth user passwd alice --password-stdin   # your own: current, then new"
    )]
    Passwd {
        /// The user whose password to set.
        name: String,
        /// Read the password from standard input (your own: the current password on the first line, the new one on the second).
        #[arg(long)]
        password_stdin: bool,
    },
}

pub(super) async fn user(
    cmd: &UserCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, _) = context::client(cfg_path, verbose).await?;
    let columns = [
        ("NAME", "name"),
        ("ADMIN", "admin"),
        ("SOURCE", "source"),
        ("CREATED", "created"),
    ];
    match cmd {
        UserCommand::Create {
            name,
            password_stdin,
            admin,
        } => {
            let password = super::common::read_new_password("password", *password_stdin)?;
            let v = c
                .api(
                    "POST",
                    "/users",
                    Some(&json!({ "name": name, "password": password, "admin": admin })),
                    &[],
                )
                .await?;
            print(format, &v, "", &columns)
        }
        UserCommand::List => print(
            format,
            &c.api("GET", "/users", None, &[]).await?,
            "users",
            &columns,
        ),
        UserCommand::Delete { name } => done(
            c.api("DELETE", &format!("/users/{name}"), None, &[]).await,
            &format!("user {name:?} deleted"),
        ),
        UserCommand::Passwd {
            name,
            password_stdin,
        } => {
            let me = c.api("GET", "/auth/whoami", None, &[]).await?;
            let own = me["kind"] == "user" && me["name"] == name.as_str();
            let current = if own {
                Some(super::common::read_secret(
                    "current password",
                    *password_stdin,
                )?)
            } else {
                None
            };
            let password = super::common::read_new_password("new password", *password_stdin)?;
            let mut body = json!({ "password": password });
            if let Some(cur) = current {
                body["currentPassword"] = json!(cur);
            }
            done(
                c.api("PUT", &format!("/users/{name}/password"), Some(&body), &[])
                    .await,
                if own {
                    "password changed; your other sessions have ended, log in again where you use them"
                } else {
                    "password changed; the user's sessions have ended"
                },
            )
        }
    }
}
