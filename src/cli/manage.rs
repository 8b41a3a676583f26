//! Commands that manage things through the API: `org`, `robot`, `robot token`, `binding`,
//! `registry-token`, `repo`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::Usage;
use super::context::{self, ClientConfig};
use super::output::{Format, print};
use crate::client::Client;

#[derive(Debug, Clone, clap::Subcommand)]
pub enum OrgCommand {
    /// Create an organization (and its namespace); you become its owner.
    Create { name: String },
    /// List your organizations.
    List,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RobotCommand {
    /// Create a robot account.
    Create {
        name: String,
        #[arg(long)]
        description: Option<String>,
    },
    List,
    Get {
        name: String,
    },
    Delete {
        name: String,
    },
    /// Robot tokens: create, list, delete.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TokenCommand {
    /// Create a token: writes {"accessId", "token"} to --output (mode 0600) or stdout with `-`.
    Create {
        robot: String,
        name: String,
        /// Lifetime, e.g. 90d (default: does not expire).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
        /// File to write the token to, or `-` for stdout.
        #[arg(long, value_name = "FILE|-")]
        output: Option<String>,
    },
    List {
        robot: String,
    },
    Delete {
        robot: String,
        id: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BindingCommand {
    /// Bind a role to a user or robot, in the whole organization or a namespace or repository glob.
    Create {
        name: String,
        #[arg(long)]
        role: String,
        #[arg(long, conflicts_with = "robot", required_unless_present = "robot")]
        user: Option<String>,
        #[arg(long)]
        robot: Option<String>,
        #[arg(long, conflicts_with = "repository")]
        namespace: Option<String>,
        #[arg(long)]
        repository: Option<String>,
    },
    List,
    Delete {
        name: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RegistryTokenCommand {
    /// Create an organization-wide registry token (login user name `token`).
    Create {
        #[arg(long)]
        readwrite: bool,
        #[arg(long)]
        permanent: bool,
        #[arg(long)]
        description: Option<String>,
    },
    List,
    Delete {
        id: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RepoCommand {
    /// List the repositories you may pull.
    List,
}

/// The organization: `--org`, else the context's.
fn org_of(flag: Option<&str>, ctx_org: Option<String>) -> anyhow::Result<String> {
    flag.map(str::to_owned)
        .or(ctx_org)
        .ok_or_else(|| Usage("no organization: pass --org ORG or log in with -a ORG".into()).into())
}

fn connect(cfg_path: &Path, verbose: bool) -> anyhow::Result<(Client, Option<String>)> {
    context::client(&ClientConfig::load(cfg_path)?, verbose)
}

pub(super) async fn org(
    cmd: &OrgCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, _) = connect(cfg_path, verbose)?;
    match cmd {
        OrgCommand::Create { name } => {
            let v = c
                .api("POST", "/orgs", Some(&json!({ "name": name })), &[])
                .await?;
            print(format, &v, "", &[("NAME", "name"), ("CREATED", "created")])
        }
        OrgCommand::List => print(
            format,
            &c.api("GET", "/orgs", None, &[]).await?,
            "orgs",
            &[("NAME", "name"), ("CREATED", "created")],
        ),
    }
}

const ROBOT_COLUMNS: [(&str, &str); 3] = [
    ("NAME", "name"),
    ("DESCRIPTION", "description"),
    ("CREATED", "created"),
];
const TOKEN_COLUMNS: [(&str, &str); 4] = [
    ("ID", "id"),
    ("NAME", "name"),
    ("EXPIRES", "expires"),
    ("CREATED", "created"),
];

pub(super) async fn robot(
    cmd: &RobotCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = connect(cfg_path, verbose)?;
    let org = org_of(org, ctx_org)?;
    let base = format!("/orgs/{org}/robots");
    match cmd {
        RobotCommand::Create { name, description } => {
            let v = c
                .api(
                    "POST",
                    &base,
                    Some(&json!({ "name": name, "description": description })),
                    &[],
                )
                .await?;
            print(format, &v, "", &ROBOT_COLUMNS)
        }
        RobotCommand::List => print(
            format,
            &c.api("GET", &base, None, &[]).await?,
            "robots",
            &ROBOT_COLUMNS,
        ),
        RobotCommand::Get { name } => print(
            format,
            &c.api("GET", &format!("{base}/{name}"), None, &[]).await?,
            "",
            &ROBOT_COLUMNS,
        ),
        RobotCommand::Delete { name } => {
            c.api("DELETE", &format!("{base}/{name}"), None, &[])
                .await?;
            crate::cli_eprint(&format!("robot {name:?} deleted"));
            Ok(())
        }
        RobotCommand::Token(TokenCommand::Create {
            robot,
            name,
            expires_in,
            output,
        }) => {
            let v = c
                .api(
                    "POST",
                    &format!("{base}/{robot}/tokens"),
                    Some(&json!({ "name": name, "expiresIn": expires_in })),
                    &[],
                )
                .await?;
            // Seed 000's token file: exactly {"accessId", "token"}.
            let file = json!({ "accessId": v["accessId"], "token": v["token"] });
            let text = serde_json::to_string_pretty(&file)? + "\n";
            match output.as_deref() {
                Some("-") | None => crate::cli_print(text.trim_end()),
                Some(path) => {
                    context::write_private(&PathBuf::from(path), text.as_bytes())?;
                    crate::cli_eprint(&format!(
                        "token {name:?} of robot {robot:?} written to {path} (access id {})",
                        v["accessId"].as_str().unwrap_or("")
                    ));
                }
            }
            Ok(())
        }
        RobotCommand::Token(TokenCommand::List { robot }) => print(
            format,
            &c.api("GET", &format!("{base}/{robot}/tokens"), None, &[])
                .await?,
            "tokens",
            &TOKEN_COLUMNS,
        ),
        RobotCommand::Token(TokenCommand::Delete { robot, id }) => {
            c.api("DELETE", &format!("{base}/{robot}/tokens/{id}"), None, &[])
                .await?;
            crate::cli_eprint(&format!("token {id} deleted"));
            Ok(())
        }
    }
}

pub(super) async fn binding(
    cmd: &BindingCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = connect(cfg_path, verbose)?;
    let org = org_of(org, ctx_org)?;
    let columns = [
        ("NAME", "name"),
        ("ROLE", "role"),
        ("SUBJECT", "subject"),
        ("NAMESPACE", "namespace"),
        ("REPOSITORY", "repository"),
    ];
    match cmd {
        BindingCommand::Create {
            name,
            role,
            user,
            robot,
            namespace,
            repository,
        } => {
            let subject = match (user, robot) {
                (Some(u), _) => format!("user/{u}"),
                (None, Some(r)) => format!("robot/{r}"),
                (None, None) => {
                    return Err(Usage("give --user USER or --robot ROBOT".into()).into());
                }
            };
            let mut body = json!({ "role": role, "subject": subject });
            if let Some(ns) = namespace {
                body["namespace"] = json!(ns);
            }
            if let Some(glob) = repository {
                body["repository"] = json!(glob);
            }
            let v = c
                .api(
                    "PUT",
                    &format!("/orgs/{org}/bindings/{name}"),
                    Some(&body),
                    &[],
                )
                .await?;
            print(format, &v, "", &columns)
        }
        BindingCommand::List => print(
            format,
            &c.api("GET", &format!("/orgs/{org}/bindings"), None, &[])
                .await?,
            "bindings",
            &columns,
        ),
        BindingCommand::Delete { name } => {
            c.api("DELETE", &format!("/orgs/{org}/bindings/{name}"), None, &[])
                .await?;
            crate::cli_eprint(&format!("binding {name:?} deleted"));
            Ok(())
        }
    }
}

pub(super) async fn registry_token(
    cmd: &RegistryTokenCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = connect(cfg_path, verbose)?;
    let org = org_of(org, ctx_org)?;
    let headers = [("organization", org.as_str())];
    match cmd {
        RegistryTokenCommand::Create {
            readwrite,
            permanent,
            description,
        } => {
            let path = if *permanent {
                "/tokens?permanent=true"
            } else {
                "/tokens"
            };
            let v = c
                .api(
                    "POST",
                    path,
                    Some(&json!({ "readwrite": readwrite, "description": description })),
                    &headers,
                )
                .await?;
            // The secret is the point of this command's output, in every format.
            let columns = [
                ("ID", "id"),
                ("TOKEN", "token"),
                ("READWRITE", "readwrite"),
                ("EXPIRES", "expires"),
            ];
            print(format, &v, "", &columns)
        }
        RegistryTokenCommand::List => {
            let columns = [
                ("ID", "id"),
                ("DESCRIPTION", "description"),
                ("READWRITE", "readwrite"),
                ("EXPIRES", "expires"),
            ];
            print(
                format,
                &c.api("GET", "/tokens", None, &headers).await?,
                "tokens",
                &columns,
            )
        }
        RegistryTokenCommand::Delete { id } => {
            c.api("DELETE", &format!("/tokens/{id}"), None, &headers)
                .await?;
            crate::cli_eprint(&format!("registry token {id} deleted"));
            Ok(())
        }
    }
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
    let (c, _) = connect(cfg_path, verbose)?;
    const PAGE: usize = 1000;
    let mut repos: Vec<Value> = Vec::new();
    let mut last: Option<String> = None;
    loop {
        let url = match &last {
            Some(l) => format!("{}/v2/_catalog?n={PAGE}&last={l}", c.base()),
            None => format!("{}/v2/_catalog?n={PAGE}", c.base()),
        };
        let page = c.call("GET", &url, None, &[]).await?;
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
