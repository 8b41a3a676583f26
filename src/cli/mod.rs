//! The command line: clap definitions and one file per command group. `serve`, `gc` and `keys`
//! work on the data directory; every other command is a client of the management API and the
//! registry, configured by the client config (`context.rs`).
//!
//! Exit codes: 0 success, 1 other failure (e.g. a conflict), 2 usage (also a request the server
//! refuses as invalid), 3 authentication or permission, 4 not found, 5 server or network.

mod apikey;
pub use errors::{NoAnswer, Unauthenticated, Usage};

pub(crate) mod apply;
mod audit;
mod binding;
mod common;
pub(crate) mod context;
mod credential;
pub mod docker;
mod errors;
pub mod files;
mod gc;
mod keys;
mod member;
mod migrate;
mod namespace;
mod org;
pub mod output;
pub mod provider;
mod registry_token;
mod repo;
mod robot;
mod role;
mod serve;
pub mod session;
mod tag;
mod token;
mod trust;
mod user;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

pub use crate::config::ServeArgs;
pub use gc::GcArgs;
pub use keys::KeysArgs;
use output::Format;

/// The exit codes, in `berth --help`'s footer and the README.
const EXIT_CODES: &str = "Exit codes:
  0  success
  1  other failure (for example a conflict: the object already exists)
  2  usage error, or a request the server refuses as invalid
  3  authentication or permission (log in again, or ask for access)
  4  not found
  5  server or network error";

/// berth: a private OCI registry whose centre is machine identity.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true, after_help = EXIT_CODES)]
pub struct Cli {
    /// Client configuration file [default: $BERTH_CONFIG, else ~/.config/berth/config.yaml]
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Output format of commands that print objects.
    #[arg(short = 'o', long = "format", global = true, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Show each request (method, URL, status; never credentials) on stderr.
    #[arg(long, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry server (SQLite and a blob directory in --data-dir by default).
    #[command(
        after_help = "Example:\n  berth serve --listen 0.0.0.0:5000 --data-dir /var/lib/berth"
    )]
    Serve(Box<ServeArgs>),
    /// Remove blobs, uploads and (with --untagged) manifests that nothing references.
    /// Safe to run while the server is running.
    #[command(after_help = "Example:\n  berth gc --data-dir /var/lib/berth --dry-run")]
    Gc(GcArgs),
    /// Manage the token signing keys.
    Keys(KeysArgs),
    /// Move an embedded installation (SQLite and files) to PostgreSQL and an S3 bucket.
    /// Idempotent: run it again to finish an interrupted move.
    #[command(
        after_help = "Example:\n  BERTH_SECRET_KEY=... berth migrate --from-data-dir /var/lib/berth \\\n    --to-database postgres://berth@db:5432/berth --to-storage s3://registry \\\n    --s3-endpoint https://s3.example.com --s3-path-style"
    )]
    Migrate(migrate::MigrateArgs),
    /// Log in to a server and store a session in the client config.
    #[command(after_help = "Example:\n  berth login https://registry.example.com -a acme")]
    Login(session::LoginArgs),
    /// Revoke the current session and forget it.
    #[command(after_help = "Example:\n  berth logout")]
    Logout,
    /// Show who the current credentials are.
    #[command(after_help = "Example:\n  berth whoami -o json")]
    Whoami,
    /// Your sessions (logins and what they came from): list them, end one or all.
    #[command(subcommand)]
    Session(session::SessionCommand),
    /// Organizations.
    #[command(subcommand)]
    Org(org::OrgCommand),
    /// Robot accounts and their tokens.
    Robot {
        /// The organization (default: the current context's).
        #[arg(long, global = true)]
        org: Option<String>,
        #[command(subcommand)]
        command: robot::RobotCommand,
    },
    /// Role bindings.
    Binding {
        /// The organization (default: the current context's).
        #[arg(long, global = true)]
        org: Option<String>,
        #[command(subcommand)]
        command: binding::BindingCommand,
    },
    /// Organization-wide registry tokens.
    RegistryToken {
        /// The organization (default: the current context's).
        #[arg(long, global = true)]
        org: Option<String>,
        #[command(subcommand)]
        command: registry_token::RegistryTokenCommand,
    },
    /// Repositories.
    #[command(subcommand)]
    Repo(repo::RepoCommand),
    /// Tags of repositories.
    #[command(subcommand)]
    Tag(tag::TagCommand),
    /// Namespaces of an organization.
    Namespace {
        /// The organization (default: the current context's).
        #[arg(long, global = true)]
        org: Option<String>,
        #[command(subcommand)]
        command: namespace::NamespaceCommand,
    },
    /// Users (server admins).
    #[command(subcommand)]
    User(user::UserCommand),
    /// Members of an organization.
    Member {
        /// The organization (default: the current context's).
        #[arg(long, global = true)]
        org: Option<String>,
        #[command(subcommand)]
        command: member::MemberCommand,
    },
    /// API keys (login user name `iamapikey`), yours or a robot's.
    Apikey {
        /// The organization (default: the current context's).
        #[arg(long, global = true)]
        org: Option<String>,
        #[command(subcommand)]
        command: apikey::ApiKeyCommand,
    },
    /// Every credential of an organization: what expires soon, what is never used.
    Credential {
        /// The organization (default: the current context's).
        #[arg(long, global = true)]
        org: Option<String>,
        #[command(subcommand)]
        command: credential::CredentialCommand,
    },
    /// Custom roles.
    Role {
        /// The organization (default: the current context's).
        #[arg(long, global = true)]
        org: Option<String>,
        #[command(subcommand)]
        command: role::RoleCommand,
    },
    /// The audit trail.
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Whether you (or --as robot/NAME, user/NAME) may do VERB on RESOURCE; prints yes or no.
    #[command(after_help = "Example:\n  berth can-i push acme/app --as robot/ci-bot")]
    CanI {
        /// pull, push or delete on a repository, or list, get, create, update or delete on the others.
        verb: String,
        /// A repository name, or robots/NAME, credentials/NAME, roles/NAME, bindings/NAME.
        resource: String,
        /// Ask for robot/NAME or user/NAME instead of yourself.
        #[arg(long = "as", value_name = "SUBJECT")]
        as_subject: Option<String>,
        /// The organization (default: the current context's).
        #[arg(long)]
        org: Option<String>,
    },
    /// Kubernetes pull secrets.
    #[command(subcommand)]
    PullSecret(files::PullSecretCommand),
    /// Crossplane ImageConfig objects.
    #[command(subcommand)]
    ImageConfig(files::ImageConfigCommand),
    /// The client configuration.
    #[command(subcommand)]
    Config(files::ConfigCommand),
    /// Create or update roles and bindings from multi-document YAML (FILE or - for stdin).
    #[command(after_help = "Example:\n  berth apply -f rbac.yaml")]
    Apply {
        /// A YAML file of documents, or `-` for standard input.
        #[arg(short = 'f', long = "filename", value_name = "FILE|-")]
        file: String,
        /// The organization of documents without metadata.org (default: the current context's).
        #[arg(long)]
        org: Option<String>,
    },
    /// Write registry credentials into docker's config.json (also a containers auth.json).
    #[command(after_help = "Example:\n  berth docker-config -f token.json")]
    DockerConfig(docker::DockerConfigArgs),
    /// The kubelet's image credential provider (credentialprovider.kubelet.k8s.io/v1): reads a
    /// CredentialProviderRequest on stdin, writes the response on stdout.
    #[command(
        after_help = "Example:\n  berth credential-provider config --match-image 'registry.example.com/*' > provider.yaml\n  echo '{\"apiVersion\":\"credentialprovider.kubelet.k8s.io/v1\",\"kind\":\"CredentialProviderRequest\",\"image\":\"registry.example.com/acme/app:v1\",\"serviceAccountToken\":\"...\",\"serviceAccountAnnotations\":{\"berth.dev/robot\":\"acme/deployer\"}}' \\\n    | berth credential-provider --registry registry.example.com"
    )]
    CredentialProvider(provider::ProviderArgs),
    /// Print shell completions.
    #[command(after_help = "Example:\n  berth completion bash > /etc/bash_completion.d/berth")]
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `berth completion SHELL`.
fn completion(shell: clap_complete::Shell) {
    use clap::CommandFactory as _;
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "berth", &mut out);
    crate::cli_print(String::from_utf8_lossy(&out).trim_end());
}

/// Whether the error is `can-i`'s quiet "no".
pub fn is_quiet(e: &anyhow::Error) -> bool {
    e.downcast_ref::<NoAnswer>().is_some()
}

/// The exit code for an error, by its kind.
pub fn exit_code(e: &anyhow::Error) -> ExitCode {
    use crate::client::ClientError;
    let code = if e.downcast_ref::<Usage>().is_some() {
        2
    } else if e.downcast_ref::<Unauthenticated>().is_some() {
        3
    } else {
        match e.chain().find_map(|c| c.downcast_ref::<ClientError>()) {
            Some(ClientError::Status {
                status: 401 | 403 | 429,
                ..
            }) => 3,
            Some(ClientError::Status { status: 404, .. }) => 4,
            // The server found the request itself wrong: a usage error.
            Some(ClientError::Status { status: 400, .. }) => 2,
            Some(ClientError::Status { status, .. }) if *status >= 500 => 5,
            Some(ClientError::Transport { .. }) => 5,
            _ => 1,
        }
    };
    ExitCode::from(code)
}

/// A hint for errors where one helps.
pub fn hint(e: &anyhow::Error) -> Option<&'static str> {
    use crate::client::ClientError;
    match e.chain().find_map(|c| c.downcast_ref::<ClientError>()) {
        Some(ClientError::Status {
            status: 401,
            message,
            ..
        }) if message.contains("password is wrong") => {
            Some("check them, or ask a server admin to set a new password")
        }
        Some(ClientError::Status { status: 401, .. }) => Some("log in again with `berth login`"),
        Some(ClientError::Transport { .. }) => Some("is the server running, and is the URL right?"),
        _ => None,
    }
}

pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let Cli {
        config,
        format,
        verbose,
        command,
    } = cli;
    // The commands that work on the data directory, or print without a server.
    match &command {
        Command::Serve(args) => return serve::run(args),
        Command::Gc(args) => return gc::run(args),
        Command::Keys(args) => return keys::run(args),
        Command::Migrate(args) => return migrate::run(args),
        Command::ImageConfig(cmd) => {
            files::image_config(cmd, format)?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Completion { shell } => {
            completion(*shell);
            return Ok(ExitCode::SUCCESS);
        }
        Command::CredentialProvider(args) => {
            provider::run(args)?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    let path = context::path(config.as_deref())?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async {
        match &command {
            Command::Login(args) => session::login(args, &path, verbose).await,
            Command::Logout => session::logout(&path, verbose).await,
            Command::Whoami => session::whoami(&path, format, verbose).await,
            Command::Session(cmd) => session::session(cmd, &path, format, verbose).await,
            Command::Org(cmd) => org::org(cmd, &path, format, verbose).await,
            Command::Robot { org, command } => {
                robot::robot(command, org.as_deref(), &path, format, verbose).await
            }
            Command::Binding { org, command } => {
                binding::binding(command, org.as_deref(), &path, format, verbose).await
            }
            Command::RegistryToken { org, command } => {
                registry_token::registry_token(command, org.as_deref(), &path, format, verbose)
                    .await
            }
            Command::Repo(cmd) => repo::repo(cmd, &path, format, verbose).await,
            Command::Tag(cmd) => tag::tag(cmd, &path, format, verbose).await,
            Command::Namespace { org, command } => {
                namespace::namespace(command, org.as_deref(), &path, format, verbose).await
            }
            Command::User(cmd) => user::user(cmd, &path, format, verbose).await,
            Command::Member { org, command } => {
                member::member(command, org.as_deref(), &path, format, verbose).await
            }
            Command::Apikey { org, command } => {
                apikey::apikey(command, org.as_deref(), &path, format, verbose).await
            }
            Command::Role { org, command } => {
                role::role(command, org.as_deref(), &path, format, verbose).await
            }
            Command::Credential { org, command } => {
                credential::credential(command, org.as_deref(), &path, format, verbose).await
            }
            Command::Audit(cmd) => audit::audit(cmd, &path, format, verbose).await,
            Command::CanI {
                verb,
                resource,
                as_subject,
                org,
            } => {
                if binding::can_i(
                    verb,
                    resource,
                    as_subject.as_deref(),
                    org.as_deref(),
                    &path,
                    verbose,
                )
                .await?
                {
                    Ok(())
                } else {
                    Err(anyhow::Error::new(NoAnswer))
                }
            }
            Command::PullSecret(cmd) => files::pull_secret(cmd, &path, format, verbose).await,
            Command::Config(cmd) => files::config(cmd, &path, format),
            Command::DockerConfig(args) => docker::docker_config(args, &path),
            Command::Apply { file, org } => {
                apply::apply(file, org.as_deref(), &path, verbose).await
            }
            Command::Serve(_)
            | Command::Gc(_)
            | Command::Keys(_)
            | Command::Migrate(_)
            | Command::ImageConfig(_)
            | Command::Completion { .. }
            | Command::CredentialProvider(_) => Ok(()),
        }
    })?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    /// Every `berth …` command the README shows parses as written (its flags and arguments
    /// exist), so the walkthrough cannot drift from the CLI.
    #[test]
    fn every_command_in_the_readme_parses() {
        use clap::Parser as _;
        let readme = include_str!("../../README.md");
        let mut in_block = false;
        let mut checked = 0;
        let mut failed = Vec::new();
        // Lines of the sh blocks, continuation lines (ending in `\`) joined.
        let mut lines = Vec::new();
        let mut pending = String::new();
        for line in readme.lines() {
            if line.starts_with("```") {
                in_block = line.starts_with("```sh");
                continue;
            }
            if !in_block {
                continue;
            }
            let line = line.split(" # ").next().unwrap_or(line);
            match line.trim_end().strip_suffix('\\') {
                Some(head) => pending.push_str(head),
                None => {
                    pending.push_str(line);
                    lines.push(std::mem::take(&mut pending));
                }
            }
        }
        for line in &lines {
            for part in line.split(&['|', ';'][..]).flat_map(|p| p.split("&&")) {
                let part = part.trim();
                if !part.starts_with("berth ") || part.contains("$(") || part.contains('>') {
                    continue;
                }
                let args: Vec<String> = part
                    .split_whitespace()
                    .map(|a| a.trim_matches(|c| c == '\'' || c == '"').to_owned())
                    .collect();
                checked += 1;
                if let Err(e) = super::Cli::try_parse_from(&args) {
                    failed.push(format!(
                        "{part}\n  {}",
                        e.to_string().lines().next().unwrap_or("")
                    ));
                }
            }
        }
        assert!(checked > 30, "only {checked} commands found in the README");
        assert!(
            failed.is_empty(),
            "README commands that do not parse:\n{}",
            failed.join("\n")
        );
    }

    /// Every command a user can run says what it does and shows an example in its `--help`.
    #[test]
    fn every_command_has_a_description_and_an_example() {
        use clap::CommandFactory as _;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let subs: Vec<&clap::Command> = cmd
                .get_subcommands()
                .filter(|c| c.get_name() != "help")
                .collect();
            if subs.is_empty() {
                if cmd.get_about().is_none() {
                    missing.push(format!("{path}: no description"));
                }
                if !cmd.get_after_help().is_some_and(|h| {
                    let h = h.to_string();
                    h.contains("Example:") || h.contains("Examples:")
                }) {
                    missing.push(format!("{path}: no example"));
                }
            }
            for s in subs {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "berth", &mut missing);
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn every_flag_and_argument_has_a_description() {
        use clap::CommandFactory as _;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if ["help", "version"].contains(&id) {
                    continue;
                }
                if a.get_help().is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("{path}: {id}"));
                }
            }
            for s in cmd.get_subcommands().filter(|c| c.get_name() != "help") {
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "berth", &mut missing);
        assert!(
            missing.is_empty(),
            "{} without a description:\n{}",
            missing.len(),
            missing.join("\n")
        );
    }

    /// The commands the console's secret page tells users to type are commands of this CLI.
    #[test]
    fn the_console_shows_only_commands_the_cli_takes() {
        use clap::Parser as _;
        let commands = crate::kube::token_file_commands(
            "ci.json",
            "registry.example.com:5000",
            "ci-pull",
            "crossplane-system",
        );
        assert!(commands.len() >= 3);
        for (what, line) in commands {
            let args: Vec<&str> = line.split_whitespace().collect();
            assert_eq!(args[0], "berth", "{what}: {line}");
            if let Err(e) = super::Cli::try_parse_from(&args) {
                panic!("{what}: `{line}` is not a berth command: {e}");
            }
        }
    }

    #[test]
    fn the_help_footer_lists_the_exit_codes() {
        use clap::CommandFactory as _;
        let help = super::Cli::command().render_long_help().to_string();
        for code in ["0 ", "1 ", "2 ", "3 ", "4 ", "5 "] {
            assert!(help.contains(&format!("  {code}")), "{help}");
        }
        assert!(help.contains("Exit codes:"), "{help}");
    }
}
