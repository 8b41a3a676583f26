//! Commands that manage things through the API: `org`, `robot`, `robot token`, `binding`,
//! `registry-token`, `repo`.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use super::Usage;
use super::context;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum OrgCommand {
    /// Create an organization (and its namespace); you become its owner.
    #[command(after_help = "Example:\n  berth org create acme")]
    Create {
        /// The organization's name (also the name of its first namespace).
        name: String,
    },
    /// List your organizations.
    #[command(after_help = "Example:\n  berth org list -o json")]
    List,
    /// Show an organization and its namespaces.
    #[command(after_help = "Example:\n  berth org get acme")]
    Get {
        /// The organization's name.
        name: String,
    },
    /// Delete an organization (owners).
    #[command(after_help = "Example:\n  berth org delete acme")]
    Delete {
        /// The organization's name.
        name: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum NamespaceCommand {
    /// Create a namespace in the organization.
    #[command(after_help = "Example:\n  berth namespace create acme-tools --public")]
    Create {
        /// The namespace's name (the first segment of its repositories' names).
        name: String,
        /// Let anyone pull from it without credentials.
        #[arg(long)]
        public: bool,
    },
    /// List the organization's namespaces.
    #[command(after_help = "Example:\n  berth namespace list --org acme")]
    List,
    /// Allow or stop anonymous pulls.
    #[command(after_help = "Example:\n  berth namespace set-public acme-tools false")]
    SetPublic {
        /// The namespace's name (the first segment of its repositories' names).
        name: String,
        /// Let anyone pull from it without credentials.
        #[arg(action = clap::ArgAction::Set, value_parser = clap::value_parser!(bool))]
        public: bool,
    },
}

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

#[derive(Debug, Clone, clap::Subcommand)]
pub enum MemberCommand {
    /// Add a user to the organization, or change their role.
    #[command(after_help = "Example:\n  berth member add alice --role owner")]
    Add {
        /// The user.
        user: String,
        /// owner (manages the organization) or member.
        #[arg(long, default_value = "member", value_parser = ["member", "owner"])]
        role: String,
    },
    /// Remove a user from the organization.
    #[command(after_help = "Example:\n  berth member remove alice")]
    Remove {
        /// The user.
        user: String,
    },
    /// List the organization's members.
    #[command(after_help = "Example:\n  berth member list --org acme")]
    List,
}

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
    },
    /// List API keys (yours, or a robot's with --robot); no secrets.
    #[command(after_help = "Example:\n  berth apikey list")]
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

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RoleCommand {
    /// Create or replace a custom role with one rule.
    #[command(
        after_help = "Example:\n  berth role create puller --verb pull --name \"acme/pub-*\""
    )]
    Create {
        /// The role's name.
        name: String,
        /// A verb the role allows (pull, push, delete, list, get, create, update or *); repeat for several.
        #[arg(long = "verb", required = true, value_name = "VERB")]
        verbs: Vec<String>,
        #[arg(
            long = "resource",
            default_value = "repositories",
            value_name = "RESOURCE"
        )]
        /// A resource the verbs apply to (repositories, robots, credentials, roles, bindings or *); repeat for several.
        resources: Vec<String>,
        /// Repository globs the rule is limited to (default: all).
        #[arg(long = "name", value_name = "GLOB")]
        names: Vec<String>,
    },
    /// List roles: the built-in ones and the organization's own.
    #[command(after_help = "Example:\n  berth role list")]
    List,
    /// Show a role's rules.
    #[command(after_help = "Example:\n  berth role get puller -o yaml")]
    Get {
        /// The role's name.
        name: String,
    },
    /// Delete a custom role.
    #[command(after_help = "Example:\n  berth role delete puller")]
    Delete {
        /// The role's name.
        name: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TagCommand {
    /// List the tags of a repository.
    #[command(after_help = "Example:\n  berth tag list acme/app")]
    List {
        /// The repository, such as acme/app.
        repository: String,
    },
    /// Delete a tag (REPO:TAG); the manifest stays.
    #[command(after_help = "Example:\n  berth tag delete acme/app:old")]
    Delete {
        /// REPOSITORY:TAG, such as acme/app:old.
        reference: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum AuditCommand {
    /// List audit events, newest first.
    #[command(after_help = "Example:\n  berth audit list --since 24h --actor robot:acme/ci-bot")]
    List {
        /// Only events since this long ago (15m, 24h) or this Unix time.
        #[arg(long)]
        since: Option<String>,
        /// Only events of this actor, such as user:alice or robot:acme/ci-bot.
        #[arg(long)]
        actor: Option<String>,
        /// Only this action, such as login, token.issue or binding.put.
        #[arg(long)]
        action: Option<String>,
        /// At most this many events.
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

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

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CredentialCommand {
    /// List the organization's robot tokens, robot API keys, registry tokens and trusts with
    /// expiry and last use; the filters keep those that need attention.
    #[command(
        after_help = "Example:\n  berth credential list --expiring-within 14d --unused-for 90d"
    )]
    List {
        /// Keep credentials that expire (or expired) within this time.
        #[arg(long, value_name = "DURATION")]
        expiring_within: Option<String>,
        /// Keep credentials (and trusts) not used for this long; never used counts from creation.
        #[arg(long, value_name = "DURATION")]
        unused_for: Option<String>,
    },
}

pub(super) async fn credential(
    cmd: &CredentialCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let org = org_of(org, ctx_org)?;
    match cmd {
        CredentialCommand::List {
            expiring_within,
            unused_for,
        } => {
            let mut q = Vec::new();
            if let Some(e) = expiring_within {
                q.push(format!("expiringWithin={e}"));
            }
            if let Some(u) = unused_for {
                q.push(format!("unusedFor={u}"));
            }
            let path = format!("/orgs/{org}/credentials?{}", q.join("&"));
            let mut v = credentials(c.api("GET", &path, None, &[]).await?, "credentials");
            if let Some(list) = v["credentials"].as_array_mut() {
                for cr in list {
                    cr["why"] = json!(
                        cr["reasons"]
                            .as_array()
                            .map(|r| r
                                .iter()
                                .filter_map(Value::as_str)
                                .collect::<Vec<_>>()
                                .join(", "))
                            .unwrap_or_default()
                    );
                }
            }
            let columns = [
                ("KIND", "kind"),
                ("OWNER", "owner"),
                ("NAME", "name"),
                ("EXPIRES", "expires"),
                ("LAST USED", "lastUsedAt"),
                ("STATUS", "status"),
                ("WHY", "why"),
            ];
            print(format, &v, "credentials", &columns)
        }
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum TrustCommand {
    /// Trust workloads whose tokens match to act as the robot.
    #[command(
        after_help = "Example:\n  berth robot trust add deployer ci-builds --issuer https://kubernetes.default.svc \\\n    --subject 'system:serviceaccount:ci:*' --claim kubernetes.io.namespace=ci\n  berth robot trust add deployer github --issuer https://token.actions.githubusercontent.com \\\n    --subject 'repo:acme/app:ref:refs/heads/main' --audience berth --claim repository=acme/app\n  kubectl get --raw /openid/v1/jwks > jwks.json\n  berth robot trust add deployer airgapped --issuer https://kubernetes.default.svc \\\n    --subject system:serviceaccount:prod:puller --jwks-file jwks.json"
    )]
    Add {
        /// The robot (NAME in the current organization, or ORG/NAME).
        robot: String,
        /// A name for the trust, unique among the robot's trusts.
        name: String,
        /// The issuer (`iss`) exactly; https (plain http only to a loopback address).
        #[arg(long)]
        issuer: String,
        /// The subject (`sub`): exact, or with `*` globs (system:serviceaccount:ci:*).
        #[arg(long, value_name = "PATTERN")]
        subject: String,
        /// The audience the token must carry [default: the registry's service name].
        #[arg(long, value_name = "AUD")]
        audience: Option<String>,
        /// Another claim that must hold exactly this string; dots reach nested claims
        /// (kubernetes.io.namespace=ci). Repeatable.
        #[arg(long = "claim", value_name = "KEY=VALUE")]
        claims: Vec<String>,
        /// The issuer's JSON Web Key Set, for issuers berth cannot reach (no discovery then).
        #[arg(long, value_name = "FILE")]
        jwks_file: Option<std::path::PathBuf>,
    },
    /// List a robot's trusts.
    #[command(after_help = "Example:\n  berth robot trust list deployer")]
    List {
        /// The robot (NAME or ORG/NAME).
        robot: String,
    },
    /// Delete a trust; registry tokens issued through it stop working.
    #[command(after_help = "Example:\n  berth robot trust delete deployer ci-builds")]
    Delete {
        /// The robot (NAME or ORG/NAME).
        robot: String,
        /// The trust's name.
        name: String,
    },
}

const TRUST_COLUMNS: [(&str, &str); 6] = [
    ("NAME", "name"),
    ("ISSUER", "issuer"),
    ("SUBJECT", "subject"),
    ("AUDIENCE", "audience"),
    ("CLAIMS", "claims"),
    ("LAST USED", "lastUsed"),
];

/// `ROBOT` or `ORG/ROBOT`: the organization and the robot.
fn robot_ref<'a>(org: &'a str, robot: &'a str) -> (&'a str, &'a str) {
    robot.split_once('/').unwrap_or((org, robot))
}

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
        #[arg(long, conflicts_with = "robot", required_unless_present = "robot")]
        user: Option<String>,
        /// Give the role to this robot.
        #[arg(long)]
        robot: Option<String>,
        /// Only in this namespace (default: the whole organization).
        #[arg(long, conflicts_with = "repository")]
        namespace: Option<String>,
        /// Only in repositories matching this glob, such as acme/team-*.
        #[arg(long)]
        repository: Option<String>,
    },
    /// List the organization's bindings.
    #[command(after_help = "Example:\n  berth binding list")]
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
    },
    /// List the organization's registry tokens (no secrets).
    #[command(after_help = "Example:\n  berth registry-token list")]
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

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RepoCommand {
    /// List the repositories you may pull.
    #[command(after_help = "Example:\n  berth repo list")]
    List,
}

/// The organization: `--org`, else the context's.
fn org_of(flag: Option<&str>, ctx_org: Option<String>) -> anyhow::Result<String> {
    flag.map(str::to_owned)
        .or(ctx_org)
        .ok_or_else(|| Usage("no organization: pass --org ORG or log in with -a ORG".into()).into())
}

pub(super) async fn org(
    cmd: &OrgCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, _) = context::client(cfg_path, verbose).await?;
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
        OrgCommand::Get { name } => print(
            format,
            &c.api("GET", &format!("/orgs/{name}"), None, &[]).await?,
            "",
            &[("NAME", "name"), ("CREATED", "created")],
        ),
        OrgCommand::Delete { name } => done(
            c.api("DELETE", &format!("/orgs/{name}"), None, &[]).await,
            &format!("organization {name:?} deleted"),
        ),
    }
}

const ROBOT_COLUMNS: [(&str, &str); 3] = [
    ("NAME", "name"),
    ("DESCRIPTION", "description"),
    ("CREATED", "created"),
];
const TOKEN_COLUMNS: [(&str, &str); 7] = [
    ("NAME", "name"),
    ("CREATED", "created"),
    ("EXPIRES", "expires"),
    ("LAST USED", "lastUsedAt"),
    ("FROM", "lastUsedFrom"),
    ("STATUS", "status"),
    ("ID", "id"),
];

/// A role or binding as JSON or YAML is the document `apply -f` takes back; as a table, as is.
fn exportable(format: Format, v: Value) -> Value {
    match format {
        Format::Table => v,
        Format::Json | Format::Yaml => crate::kube::rbac_manifest(&v),
    }
}

/// Says on stderr that a robot without bindings can do nothing yet, and how to change that.
fn warn_unbound(robot: &str) {
    eprintln!(
        "warning: robot {robot:?} has no bindings yet, so its tokens can do nothing; give it a role:\n  berth binding create {robot} --role Reader --robot {robot} [--namespace NAMESPACE]"
    );
}

/// Whether any binding of `org` names `robot` as its subject.
async fn robot_is_bound(c: &crate::client::Client, org: &str, robot: &str) -> anyhow::Result<bool> {
    let v = c
        .api("GET", &format!("/orgs/{org}/bindings"), None, &[])
        .await?;
    let subject = format!("robot/{robot}");
    Ok(v["bindings"]
        .as_array()
        .is_some_and(|l| l.iter().any(|b| b["subject"] == subject.as_str())))
}

/// Lists credentials: "last used" flattened into its time and client address for the table.
fn credentials(mut v: Value, field: &str) -> Value {
    if let Some(list) = v[field].as_array_mut() {
        for c in list {
            c["lastUsedAt"] = c["lastUsed"]["at"].clone();
            c["lastUsedFrom"] = c["lastUsed"]["address"].clone();
        }
    }
    v
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
                println!("\ntrusts:");
                print(format, &v, "trusts", &TRUST_COLUMNS)?;
            }
            Ok(())
        }
        RobotCommand::Trust(TrustCommand::Add {
            robot,
            name,
            issuer,
            subject,
            audience,
            claims,
            jwks_file,
        }) => {
            let (org, robot) = robot_ref(&org, robot);
            let mut wanted = serde_json::Map::new();
            for c in claims {
                let (k, v) = c
                    .split_once('=')
                    .ok_or_else(|| anyhow::anyhow!("--claim {c:?}: expected KEY=VALUE"))?;
                wanted.insert(k.to_owned(), json!(v));
            }
            let mut body = json!({
                "name": name, "issuer": issuer, "subject": subject, "audience": audience,
                "claims": wanted,
            });
            if let Some(path) = jwks_file {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
                body["jwks"] = json!(text);
            }
            let v = c
                .api(
                    "POST",
                    &format!("/orgs/{org}/robots/{robot}/trusts"),
                    Some(&body),
                    &[],
                )
                .await?;
            print(format, &v, "", &TRUST_COLUMNS)
        }
        RobotCommand::Trust(TrustCommand::List { robot }) => {
            let (org, robot) = robot_ref(&org, robot);
            print(
                format,
                &c.api(
                    "GET",
                    &format!("/orgs/{org}/robots/{robot}/trusts"),
                    None,
                    &[],
                )
                .await?,
                "trusts",
                &TRUST_COLUMNS,
            )
        }
        RobotCommand::Trust(TrustCommand::Delete { robot, name }) => {
            let (org, robot) = robot_ref(&org, robot);
            done(
                c.api(
                    "DELETE",
                    &format!("/orgs/{org}/robots/{robot}/trusts/{name}"),
                    None,
                    &[],
                )
                .await,
                &format!("trust {name:?} of robot {robot:?} deleted"),
            )
        }
        RobotCommand::Delete { name } => done(
            c.api("DELETE", &format!("{base}/{name}"), None, &[]).await,
            &format!("robot {name:?} deleted"),
        ),
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
            // A token of a robot without bindings works but may do nothing: say so (a
            // caller who may not list bindings gets no warning rather than an error).
            if let Ok(false) = robot_is_bound(&c, &org, robot).await {
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
        RobotCommand::Token(TokenCommand::Rotate {
            robot,
            name,
            overlap,
            output,
        }) => {
            let file = rotate_robot_token(&c, &org, robot, name, overlap).await?;
            emit_secret(
                output.as_deref(),
                &file,
                &format!(
                    "token {name:?} of robot {robot:?} (access id {})",
                    file["accessId"].as_str().unwrap_or("")
                ),
            )
        }
        RobotCommand::Token(TokenCommand::List { robot }) => print(
            format,
            &credentials(
                c.api("GET", &format!("{base}/{robot}/tokens"), None, &[])
                    .await?,
                "tokens",
            ),
            "tokens",
            &TOKEN_COLUMNS,
        ),
        RobotCommand::Token(TokenCommand::Delete { robot, id }) => done(
            c.api("DELETE", &format!("{base}/{robot}/tokens/{id}"), None, &[])
                .await,
            &format!("token {id} deleted"),
        ),
    }
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

/// `repo list`: the catalog, with the context's credentials as Basic auth on `/v2` (berth accepts
/// it there), page by page.
pub(super) async fn repo(
    cmd: &RepoCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let RepoCommand::List = cmd;
    let (c, _) = context::client(cfg_path, verbose).await?;
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

/// Reports a finished change on stderr.
fn done(result: Result<Value, crate::client::ClientError>, message: &str) -> anyhow::Result<()> {
    result?;
    crate::cli_eprint(message);
    Ok(())
}

pub(super) async fn namespace(
    cmd: &NamespaceCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let columns = [("NAME", "name"), ("ORG", "org"), ("PUBLIC", "public")];
    match cmd {
        NamespaceCommand::Create { name, public } => {
            let org = org_of(org, ctx_org)?;
            let v = c
                .api(
                    "POST",
                    &format!("/orgs/{org}/namespaces"),
                    Some(&json!({ "name": name, "public": public })),
                    &[],
                )
                .await?;
            print(format, &v, "", &columns)
        }
        NamespaceCommand::List => {
            let org = org_of(org, ctx_org)?;
            print(
                format,
                &c.api("GET", &format!("/orgs/{org}/namespaces"), None, &[])
                    .await?,
                "namespaces",
                &columns,
            )
        }
        NamespaceCommand::SetPublic { name, public } => {
            let v = c
                .api(
                    "PATCH",
                    &format!("/namespaces/{name}"),
                    Some(&json!({ "public": public })),
                    &[],
                )
                .await?;
            print(format, &v, "", &columns)
        }
    }
}

pub(super) async fn user(
    cmd: &UserCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, _) = context::client(cfg_path, verbose).await?;
    let columns = [("NAME", "name"), ("ADMIN", "admin"), ("CREATED", "created")];
    match cmd {
        UserCommand::Create {
            name,
            password_stdin,
            admin,
        } => {
            let password = super::session::read_secret("password", *password_stdin)?;
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
                Some(super::session::read_secret(
                    "current password",
                    *password_stdin,
                )?)
            } else {
                None
            };
            let password = super::session::read_secret("new password", *password_stdin)?;
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

pub(super) async fn member(
    cmd: &MemberCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let org = org_of(org, ctx_org)?;
    let columns = [("USER", "user"), ("ROLE", "role")];
    match cmd {
        MemberCommand::Add { user, role } => {
            let v = c
                .api(
                    "PUT",
                    &format!("/orgs/{org}/members/{user}"),
                    Some(&json!({ "role": role })),
                    &[],
                )
                .await?;
            print(format, &v, "", &columns)
        }
        MemberCommand::Remove { user } => done(
            c.api("DELETE", &format!("/orgs/{org}/members/{user}"), None, &[])
                .await,
            &format!("{user:?} removed from {org:?}"),
        ),
        MemberCommand::List => print(
            format,
            &c.api("GET", &format!("/orgs/{org}/members"), None, &[])
                .await?,
            "members",
            &columns,
        ),
    }
}

/// Writes a secret file (0600), or prints it for `-` or no file.
/// Rotates robot token `name` of `org/robot`; the new token file (`{"accessId", "token"}`).
pub(super) async fn rotate_robot_token(
    c: &crate::client::Client,
    org: &str,
    robot: &str,
    name: &str,
    overlap: &str,
) -> anyhow::Result<Value> {
    let v = rotate(
        c,
        &format!("/orgs/{org}/robots/{robot}/tokens/{name}/rotate"),
        &[],
        overlap,
        &format!("token {name:?} of robot {robot:?}"),
    )
    .await?;
    Ok(json!({ "accessId": v["accessId"], "token": v["token"] }))
}

/// Rotates the credential at `path` (`…/rotate`) and says on stderr until when the old secret
/// of `what` works; the answer carries the new secret.
async fn rotate(
    c: &crate::client::Client,
    path: &str,
    headers: &[(&str, &str)],
    overlap: &str,
    what: &str,
) -> anyhow::Result<Value> {
    let v = c
        .api("POST", path, Some(&json!({ "overlap": overlap })), headers)
        .await?;
    match v["previousValidUntil"].as_str() {
        Some(until) => crate::cli_eprint(&format!(
            "rotated {what}: the old secret works until {until}"
        )),
        None => crate::cli_eprint(&format!("rotated {what}: the old secret no longer works")),
    }
    Ok(v)
}

fn emit_secret(output: Option<&str>, value: &Value, what: &str) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)? + "\n";
    match output {
        Some("-") | None => crate::cli_print(text.trim_end()),
        Some(path) => {
            context::write_private(&PathBuf::from(path), text.as_bytes())?;
            crate::cli_eprint(&format!("{what} written to {path}"));
        }
    }
    Ok(())
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
        } => {
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

pub(super) async fn role(
    cmd: &RoleCommand,
    org: Option<&str>,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, ctx_org) = context::client(cfg_path, verbose).await?;
    let org = org_of(org, ctx_org)?;
    let columns = [("NAME", "name"), ("BUILTIN", "builtin"), ("RULES", "rules")];
    match cmd {
        RoleCommand::Create {
            name,
            verbs,
            resources,
            names,
        } => {
            let rules = json!([{ "resources": resources, "verbs": verbs, "names": names }]);
            let v = c
                .api(
                    "PUT",
                    &format!("/orgs/{org}/roles/{name}"),
                    Some(&json!({ "rules": rules })),
                    &[],
                )
                .await?;
            print(format, &v, "", &columns)
        }
        RoleCommand::List => print(
            format,
            &c.api("GET", &format!("/orgs/{org}/roles"), None, &[])
                .await?,
            "roles",
            &columns,
        ),
        RoleCommand::Get { name } => {
            let v = c
                .api("GET", &format!("/orgs/{org}/roles/{name}"), None, &[])
                .await?;
            print(format, &exportable(format, v), "", &columns)
        }
        RoleCommand::Delete { name } => done(
            c.api("DELETE", &format!("/orgs/{org}/roles/{name}"), None, &[])
                .await,
            &format!("role {name:?} deleted"),
        ),
    }
}

pub(super) async fn tag(
    cmd: &TagCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (c, _) = context::client(cfg_path, verbose).await?;
    match cmd {
        TagCommand::List { repository } => {
            let v = c
                .registry(
                    "GET",
                    &format!("/{repository}/tags/list"),
                    &format!("repository:{repository}:pull"),
                )
                .await?;
            let rows: Vec<Value> = v["tags"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|t| json!({ "tag": t }))
                .collect();
            print(
                format,
                &json!({ "name": v["name"], "tags": rows }),
                "tags",
                &[("TAG", "tag")],
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

pub(super) async fn audit(
    cmd: &AuditCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let AuditCommand::List {
        since,
        actor,
        action,
        limit,
    } = cmd;
    let (c, _) = context::client(cfg_path, verbose).await?;
    let mut q: Vec<(&str, String)> = vec![("limit", limit.to_string())];
    for (k, v) in [("since", since), ("actor", actor), ("action", action)] {
        if let Some(v) = v {
            q.push((k, v.clone()));
        }
    }
    let query = serde_urlencoded::to_string(&q).unwrap_or_default();
    let v = c.api("GET", &format!("/audit?{query}"), None, &[]).await?;
    let columns = [
        ("TIME", "time"),
        ("ACTOR", "actor"),
        ("ACTION", "action"),
        ("OUTCOME", "outcome"),
        ("TARGET", "target"),
    ];
    print(format, &v, "events", &columns)
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
