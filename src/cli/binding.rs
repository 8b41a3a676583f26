//! `berth binding`: role bindings (with `can-i`, which asks what a binding gives).
use std::path::Path;

use serde_json::json;

use super::common::{done, exportable, org_of};
use super::context;
use super::errors::Usage;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum BindingCommand {
    /// Bind a role to a user or robot, in the whole organization or a namespace or repository glob.
    #[command(
        after_help = "Example:\n  berth binding create ci-bot --role Writer --robot ci-bot --namespace acme"
    )]
    Create {
        /// The binding's name.
        name: String,
        /// The role to give: Reader, Writer, Manager or a custom one.
        #[arg(long)]
        role: String,
        /// Give the role to this user.
        #[arg(long, conflicts_with_all = ["robot", "group"], required_unless_present_any = ["robot", "group"])]
        user: Option<String>,
        /// Give the role to this robot.
        #[arg(long, conflicts_with = "group")]
        robot: Option<String>,
        /// Give the role to the people an identity provider puts in this group (single
        /// sign-on); they are members of the organization through it.
        #[arg(long)]
        group: Option<String>,
        /// Only in this namespace (default: the whole organization).
        #[arg(long, conflicts_with = "repository")]
        namespace: Option<String>,
        /// Only in repositories matching this glob, such as acme/team-*.
        #[arg(long)]
        repository: Option<String>,
    },
    /// List the organization's bindings.
    #[command(after_help = "Example:\n  berth binding list")]
    #[command(visible_alias = "ls")]
    List,
    /// Show a binding; `-o yaml` prints the document `berth apply -f` takes back.
    #[command(after_help = "Example:\n  berth binding get ci-bot -o yaml > ci-bot.yaml")]
    Get {
        /// The binding's name.
        name: String,
    },
    /// Delete a binding.
    #[command(after_help = "Example:\n  berth binding delete ci-bot")]
    Delete {
        /// The binding's name.
        name: String,
    },
}

pub(super) async fn binding(
    cmd: &BindingCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
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
            group,
            namespace,
            repository,
        } => {
            let subject = match (user, robot, group) {
                (Some(u), _, _) => format!("user/{u}"),
                (None, Some(r), _) => format!("robot/{r}"),
                (None, None, Some(g)) => format!("group/{g}"),
                (None, None, None) => {
                    return Err(
                        Usage("give --user USER, --robot ROBOT or --group GROUP".into()).into(),
                    );
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
        BindingCommand::Get { name } => {
            let v = c
                .api("GET", &format!("/orgs/{org}/bindings/{name}"), None, &[])
                .await?;
            print(format, &exportable(format, v), "", &columns)
        }
        BindingCommand::List => print(
            format,
            &c.api("GET", &format!("/orgs/{org}/bindings"), None, &[])
                .await?,
            "bindings",
            &columns,
        ),
        BindingCommand::Delete { name } => done(
            c.api("DELETE", &format!("/orgs/{org}/bindings/{name}"), None, &[])
                .await,
            &format!("binding {name:?} deleted"),
        ),
    }
}

/// `can-i VERB RESOURCE [--as SUBJECT]`, like `kubectl auth can-i`: prints yes or no.
pub(super) async fn can_i(
    verb: &str,
    resource: &str,
    as_subject: Option<&str>,
    org: Option<&str>,
    cfg_path: &Path,
    verbose: bool,
) -> anyhow::Result<bool> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let org = org_of(org, ctx_org)?;
    // RESOURCE is a repository name, or KIND/NAME for robots, credentials, roles and bindings.
    let (kind, name) = match resource.split_once('/') {
        Some((k, n)) if crate::policy::RESOURCES.contains(&k) => (k.to_owned(), n.to_owned()),
        _ => ("repositories".to_owned(), resource.to_owned()),
    };
    let mut body = json!({ "verb": verb, "resource": kind, "name": name });
    if let Some(s) = as_subject {
        // The server answers "no" for a subject it does not know (no oracle); the caller who
        // may ask about others may see the org's robots and members, so a typo is named here.
        let found = match s.split_once('/') {
            Some(("robot", r)) => c
                .api("GET", &format!("/orgs/{org}/robots/{r}"), None, &[])
                .await
                .map(|_| true),
            Some(("user", u)) => c
                .api("GET", &format!("/orgs/{org}/members"), None, &[])
                .await
                .map(|v| {
                    v["members"]
                        .as_array()
                        .is_some_and(|m| m.iter().any(|x| x["name"] == u))
                }),
            // A group exists while a binding or a sign-in names it: nothing to look up.
            Some(("group", g)) if !g.is_empty() => Ok(true),
            _ => {
                return Err(Usage(format!(
                    "--as {s:?}: expected user/NAME, robot/NAME or group/NAME"
                ))
                .into());
            }
        };
        match found {
            Ok(true) => {}
            Ok(false) => {
                return Err(not_found(format!(
                    "no member {s:?} in organization {org:?}"
                )));
            }
            Err(crate::client::ClientError::Status { status: 404, .. }) => {
                return Err(not_found(format!(
                    "no such robot {s:?} in organization {org:?}"
                )));
            }
            // Not allowed to look: the server's answer is all there is.
            Err(_) => {}
        }
        body["subject"] = json!(s);
    }
    let v = c
        .api(
            "POST",
            &format!("/orgs/{org}/access-review"),
            Some(&body),
            &[],
        )
        .await?;
    let allowed = v["allowed"].as_bool().unwrap_or(false);
    crate::cli_print(if allowed { "yes" } else { "no" });
    Ok(allowed)
}

/// Exit code 4 and this message.
fn not_found(message: String) -> anyhow::Error {
    crate::client::ClientError::Status {
        status: 404,
        code: "NOT_FOUND".into(),
        message,
    }
    .into()
}
