//! `berth robot`: robot accounts (their tokens are `token`, their trusts `trust`).
use std::path::Path;

use serde_json::json;

use super::common::{ROBOT_COLUMNS, TRUST_COLUMNS, done, org_of, warn_unbound};
use super::context;
use super::output::{Format, print};
use super::token::TokenCommand;
use super::trust::TrustCommand;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RobotCommand {
    /// Create a robot account; with --role, bind the role to it in the same step.
    #[command(
        after_help = "Example:\n  berth robot create ci-bot --role Writer --namespace acme\n  berth robot create scanner --description \"reads everything\" --role Reader"
    )]
    Create {
        /// The robot's name (its full name is ORG/NAME).
        name: String,
        /// What the robot is for.
        #[arg(long)]
        description: Option<String>,
        /// Bind this role (Reader, Writer, Manager or a custom one) to the robot, for the whole
        /// organization unless --namespace or --repository narrows it.
        #[arg(long)]
        role: Option<String>,
        /// With --role: only in this namespace.
        #[arg(long, requires = "role", conflicts_with = "repository")]
        namespace: Option<String>,
        /// With --role: only in repositories matching this glob (acme/team-*).
        #[arg(long, requires = "role")]
        repository: Option<String>,
    },
    /// List the organization's robots.
    #[command(after_help = "Example:\n  berth robot list -o yaml")]
    List,
    /// Show a robot.
    #[command(after_help = "Example:\n  berth robot get ci-bot")]
    Get {
        /// The robot's name.
        name: String,
    },
    /// Delete a robot with its tokens, keys and bindings.
    #[command(after_help = "Example:\n  berth robot delete ci-bot")]
    Delete {
        /// The robot's name.
        name: String,
    },
    /// Robot tokens: create, list, delete.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Workload trusts: which tokens of an OpenID issuer (a Kubernetes service account, a CI
    /// job) may act as the robot, with no stored secret.
    #[command(subcommand)]
    Trust(TrustCommand),
}

pub(super) async fn robot(
    cmd: &RobotCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let org = org_of(org, ctx_org)?;
    let base = format!("/orgs/{org}/robots");
    match cmd {
        RobotCommand::Create {
            name,
            description,
            role,
            namespace,
            repository,
        } => {
            let v = c
                .api(
                    "POST",
                    &base,
                    Some(&json!({ "name": name, "description": description })),
                    &[],
                )
                .await?;
            match role {
                Some(role) => {
                    let mut body = json!({ "role": role, "subject": format!("robot/{name}") });
                    if let Some(ns) = namespace {
                        body["namespace"] = json!(ns);
                    }
                    if let Some(glob) = repository {
                        body["repository"] = json!(glob);
                    }
                    if let Err(e) = c
                        .api(
                            "PUT",
                            &format!("/orgs/{org}/bindings/{name}"),
                            Some(&body),
                            &[],
                        )
                        .await
                    {
                        eprintln!("robot {name:?} was created, but binding {role:?} to it failed");
                        return Err(e.into());
                    }
                    eprintln!("bound role {role:?} to robot {name:?} (binding {name:?})");
                }
                None => warn_unbound(name),
            }
            print(format, &v, "", &ROBOT_COLUMNS)
        }
        RobotCommand::List => print(
            format,
            &c.api("GET", &base, None, &[]).await?,
            "robots",
            &ROBOT_COLUMNS,
        ),
        RobotCommand::Get { name } => {
            let v = c.api("GET", &format!("{base}/{name}"), None, &[]).await?;
            print(format, &v, "", &ROBOT_COLUMNS)?;
            if format == Format::Table && v["trusts"].as_array().is_some_and(|t| !t.is_empty()) {
                crate::cli_print("\ntrusts:");
                print(format, &v, "trusts", &TRUST_COLUMNS)?;
            }
            Ok(())
        }
        RobotCommand::Trust(cmd) => super::trust::run(cmd, &c, &org, format).await,
        RobotCommand::Delete { name } => done(
            c.api("DELETE", &format!("{base}/{name}"), None, &[]).await,
            &format!("robot {name:?} deleted"),
        ),
        RobotCommand::Token(cmd) => super::token::run(cmd, &c, &org, format).await,
    }
}
