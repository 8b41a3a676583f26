//! `berth robot`: robot accounts (their tokens are `token`, their trusts `trust`).
use std::path::Path;

use serde_json::{Value, json};

use super::common::{
    ROBOT_COLUMNS, TOKEN_COLUMNS, TRUST_COLUMNS, credentials, done, org_of, warn_unbound,
};
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
    /// List the organization's robots: what each may do (bindings), its live credentials and
    /// when one was last used.
    #[command(after_help = "Example:\n  berth robot list -o yaml")]
    #[command(visible_alias = "ls")]
    List,
    /// Show a robot: its bindings, tokens and API keys (status, expiry, last use) and trusts.
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
        RobotCommand::List => {
            let mut v = c.api("GET", &base, None, &[]).await?;
            let bindings = c
                .api("GET", &format!("/orgs/{org}/bindings"), None, &[])
                .await?;
            // Who may list robots may not list credentials: then the list says so.
            let creds = c
                .api("GET", &format!("/orgs/{org}/credentials"), None, &[])
                .await
                .ok();
            if let Some(list) = v["robots"].as_array_mut() {
                for r in list {
                    let subject = format!("robot/{}", r["name"].as_str().unwrap_or_default());
                    r["bindings"] = json!(granted(&bindings, &subject));
                    if let Some(creds) = &creds {
                        let mine: Vec<&Value> = creds["credentials"]
                            .as_array()
                            .map(|l| {
                                l.iter()
                                    .filter(|c| c["owner"] == subject.as_str())
                                    .collect()
                            })
                            .unwrap_or_default();
                        let live = |c: &&&Value| {
                            c["kind"] != "trust"
                                && matches!(c["status"].as_str(), Some("active" | "expiring"))
                        };
                        r["credentials"] = json!(mine.iter().filter(live).count());
                        r["trusts"] = json!(mine.iter().filter(|c| c["kind"] == "trust").count());
                        r["lastUsed"] = mine
                            .iter()
                            .filter_map(|c| c["lastUsed"]["at"].as_str())
                            .max()
                            .map_or(Value::Null, |t| json!(t));
                    }
                }
            }
            print(format, &v, "robots", &ROBOT_LIST_COLUMNS)
        }
        RobotCommand::Get { name } => {
            // `acme/ci` names the robot with its organization, as tokens and trusts do.
            let (org, name) = match name.split_once('/') {
                Some((o, n)) => (o.to_owned(), n.to_owned()),
                None => (org.clone(), name.clone()),
            };
            let path = format!("/orgs/{org}/robots/{name}");
            let mut v = c.api("GET", &path, None, &[]).await?;
            let bindings = c
                .api("GET", &format!("/orgs/{org}/bindings"), None, &[])
                .await?;
            let subject = format!("robot/{name}");
            v["bindings"] = json!(
                bindings["bindings"]
                    .as_array()
                    .map(|l| l
                        .iter()
                        .filter(|b| b["subject"] == subject.as_str())
                        .cloned()
                        .collect::<Vec<_>>())
                    .unwrap_or_default()
            );
            v["tokens"] = credentials(
                c.api("GET", &format!("{path}/tokens"), None, &[]).await?,
                "tokens",
            )["tokens"]
                .take();
            v["apikeys"] = credentials(
                c.api("GET", &format!("{path}/apikeys"), None, &[]).await?,
                "apikeys",
            )["apikeys"]
                .take();
            if format != Format::Table {
                return print(format, &v, "", &ROBOT_COLUMNS);
            }
            print(format, &v, "", &ROBOT_COLUMNS)?;
            let sections: [(&str, &str, &Columns); 4] = [
                ("bindings", "bindings", &BINDING_COLUMNS),
                ("tokens", "tokens", &TOKEN_COLUMNS),
                ("api keys", "apikeys", &TOKEN_COLUMNS),
                ("trusts", "trusts", &TRUST_COLUMNS),
            ];
            for (title, field, columns) in sections {
                crate::cli_print(&format!("\n{title}:"));
                if v[field].as_array().is_some_and(|l| !l.is_empty()) {
                    print(format, &v, field, columns)?;
                } else {
                    crate::cli_print("  none");
                }
            }
            Ok(())
        }
        RobotCommand::Trust(cmd) => super::trust::run(cmd, &c, &org, format).await,
        RobotCommand::Delete { name } => {
            let path = match name.split_once('/') {
                Some((o, n)) => format!("/orgs/{o}/robots/{n}"),
                None => format!("{base}/{name}"),
            };
            done(
                c.api("DELETE", &path, None, &[]).await,
                &format!("robot {name:?} deleted"),
            )
        }
        RobotCommand::Token(cmd) => super::token::run(cmd, &c, &org, format).await,
    }
}

/// A table's columns: (heading, field).
type Columns = [(&'static str, &'static str)];

const ROBOT_LIST_COLUMNS: [(&str, &str); 6] = [
    ("NAME", "name"),
    ("BINDINGS", "bindings"),
    ("CREDENTIALS", "credentials"),
    ("TRUSTS", "trusts"),
    ("LAST USED", "lastUsed"),
    ("DESCRIPTION", "description"),
];

const BINDING_COLUMNS: [(&str, &str); 4] = [
    ("NAME", "name"),
    ("ROLE", "role"),
    ("NAMESPACE", "namespace"),
    ("REPOSITORY", "repository"),
];

/// What `subject`'s bindings grant, one `ROLE (scope)` each: `Reader (namespace acme)`.
fn granted(bindings: &Value, subject: &str) -> String {
    let list: Vec<String> = bindings["bindings"]
        .as_array()
        .map(|l| {
            l.iter()
                .filter(|b| b["subject"] == subject)
                .map(|b| {
                    let role = b["role"].as_str().unwrap_or_default();
                    match (b["namespace"].as_str(), b["repository"].as_str()) {
                        (Some(ns), _) => format!("{role} (namespace {ns})"),
                        (_, Some(glob)) => format!("{role} (repositories {glob})"),
                        _ => format!("{role} (organization)"),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    if list.is_empty() {
        "none".to_owned()
    } else {
        list.join(", ")
    }
}
