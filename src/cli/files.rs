//! Files for Kubernetes, Crossplane and automation: `pull-secret create` (a
//! `kubernetes.io/dockerconfigjson` Secret), `image-config create` (a Crossplane `ImageConfig`,
//! seed 001), and `config create --from-token` (a self-contained client config for a robot,
//! seed 004's kubeconfig for berth), plus `config view|get-contexts|use-context`.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};

use super::context::ClientConfig;
use super::errors::Usage;
use super::output::{Format, print};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PullSecretCommand {
    /// Print a Kubernetes pull secret for a token file or a user name and password.
    #[command(
        after_help = "Example:\n  berth pull-secret create my-secret -f token.json --namespace crossplane-system | kubectl apply -f -"
    )]
    Create {
        /// The Secret's name.
        name: String,
        /// A token file: a robot token ({"accessId","token"}), an API key ({"apikey"}) or a registry token ({"token"}); `-` reads it from standard input.
        #[arg(
            short = 'f',
            long = "file",
            value_name = "TOKEN_FILE",
            conflicts_with_all = ["username", "rotate"],
            required_unless_present_any = ["username", "rotate"]
        )]
        file: Option<PathBuf>,
        /// Rotate robot token ROBOT/NAME (or ORG/ROBOT/NAME) and put the new secret in the Secret,
        /// in one step; the old secret works until --overlap ends.
        #[arg(long, value_name = "ROBOT/NAME", conflicts_with = "username")]
        rotate: Option<String>,
        /// With --rotate: how long the old secret keeps working (0: it stops now).
        #[arg(
            long,
            value_name = "DURATION",
            default_value = "24h",
            requires = "rotate"
        )]
        overlap: String,
        /// A user name instead of a token file (with --password-stdin), as kubectl's --docker-username.
        #[arg(long, visible_alias = "docker-username")]
        username: Option<String>,
        /// Read the password for --username from standard input.
        #[arg(long, requires = "username", conflicts_with = "password")]
        password_stdin: bool,
        /// The password for --username on the command line, as kubectl's --docker-password
        /// (other users of the machine can read it in the process list: prefer --password-stdin).
        #[arg(long, visible_alias = "docker-password", requires = "username")]
        password: Option<String>,
        /// The Kubernetes namespace of the Secret.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Registry host (default: the current context's server); kubectl's --docker-server.
        #[arg(long, visible_alias = "docker-server")]
        server: Option<String>,
        /// An e-mail address recorded with the credentials, as kubectl's --docker-email.
        #[arg(long)]
        docker_email: Option<String>,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ImageConfigCommand {
    /// Print a Crossplane ImageConfig that uses a pull secret for every image under a prefix.
    #[command(
        after_help = "Example:\n  berth image-config create acme-images --prefix registry.example.com/acme --pull-secret my-secret"
    )]
    Create {
        /// The ImageConfig's name.
        name: String,
        /// An image prefix the pull secret is used for (registry.example.com/acme); give it
        /// more than once for several.
        #[arg(long, required = true)]
        prefix: Vec<String>,
        /// The pull secret's name.
        #[arg(long)]
        pull_secret: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ConfigCommand {
    /// Write a self-contained config for an automation from a robot token file.
    #[command(
        after_help = "Example:\n  berth config create --from-token token.json --server https://registry.example.com --output robot.yaml"
    )]
    Create {
        /// A robot token or API key file ({"accessId","token"} or {"apikey"}).
        #[arg(long, value_name = "TOKEN_FILE")]
        from_token: PathBuf,
        /// The server's URL, such as https://registry.example.com.
        #[arg(long)]
        server: String,
        /// PEM file of the CA of the server's TLS certificate.
        #[arg(long, value_name = "FILE")]
        ca: Option<PathBuf>,
        /// The organization the context works in.
        #[arg(long)]
        org: Option<String>,
        /// Where to write it (mode 0600); `-` for standard output.
        #[arg(long, value_name = "FILE")]
        output: PathBuf,
        /// Replace the output file if it exists (it may hold the only copy of another secret).
        #[arg(long)]
        force: bool,
    },
    /// Show the configuration (secrets redacted unless --raw).
    #[command(after_help = "Example:\n  berth config view --minify")]
    View {
        /// Show secrets instead of REDACTED.
        #[arg(long)]
        raw: bool,
        /// Only the current context, its server and its credential.
        #[arg(long)]
        minify: bool,
    },
    /// List the contexts; * marks the current one.
    #[command(after_help = "Example:\n  berth config get-contexts")]
    GetContexts,
    /// Make a context the current one.
    #[command(after_help = "Example:\n  berth config use-context acme")]
    UseContext {
        /// The context to use.
        name: String,
    },
}

fn current_host(cfg_path: &Path) -> anyhow::Result<String> {
    let cfg = ClientConfig::load(cfg_path)?;
    let (_, server, _) = cfg
        .current()
        .map_err(|_| Usage("no current context: pass --server HOST".into()))?;
    Ok(server.host())
}

fn manifest_format(format: Format) -> Format {
    // Manifests are YAML unless JSON is asked for.
    if format == Format::Json {
        Format::Json
    } else {
        Format::Yaml
    }
}

pub(super) async fn pull_secret(
    cmd: &PullSecretCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let PullSecretCommand::Create {
        name,
        file,
        rotate,
        overlap,
        username,
        password_stdin,
        password,
        namespace,
        server,
        docker_email,
    } = cmd;
    let rotated = match rotate {
        Some(r) => {
            let (c, ctx_org) = super::context::client(cfg_path, verbose).await?;
            let parts: Vec<&str> = r.split('/').collect();
            let (org, robot, token) = match parts.as_slice() {
                [robot, token] => (
                    ctx_org.ok_or_else(|| {
                        Usage("no organization in the current context; give ORG/ROBOT/NAME".into())
                    })?,
                    *robot,
                    *token,
                ),
                [org, robot, token] => ((*org).to_owned(), *robot, *token),
                _ => {
                    return Err(Usage(format!(
                        "--rotate {r:?}: expected ROBOT/NAME or ORG/ROBOT/NAME"
                    ))
                    .into());
                }
            };
            let f = super::common::rotate_robot_token(&c, &org, robot, token, overlap).await?;
            Some((
                f["accessId"].as_str().unwrap_or_default().to_owned(),
                f["token"].as_str().unwrap_or_default().to_owned(),
            ))
        }
        None => None,
    };
    let (user, password) = match (rotated, file, username) {
        (Some(login), _, _) => login,
        (None, Some(f), _) => super::common::login_of(f)?,
        (None, None, Some(u)) => match password {
            Some(p) => {
                crate::cli_eprint(
                    "warning: a password on the command line can be read by other users of this machine (process list, shell history); --password-stdin keeps it out of sight",
                );
                (u.clone(), p.clone())
            }
            None => (
                u.clone(),
                super::common::read_secret("password", *password_stdin)?,
            ),
        },
        (None, None, None) => {
            return Err(
                Usage("give -f TOKEN_FILE or --username USER --password-stdin".into()).into(),
            );
        }
    };
    let host = match server {
        Some(s) => s
            .split("://")
            .last()
            .unwrap_or(s)
            .trim_end_matches('/')
            .to_owned(),
        None => current_host(cfg_path)?,
    };
    let secret = crate::kube::pull_secret(
        name,
        namespace,
        &host,
        &user,
        &password,
        docker_email.as_deref(),
    );
    print(manifest_format(format), &secret, "", &[])
}

pub(super) fn image_config(cmd: &ImageConfigCommand, format: Format) -> anyhow::Result<()> {
    let ImageConfigCommand::Create {
        name,
        prefix,
        pull_secret,
    } = cmd;
    let v = crate::kube::image_config(name, prefix, pull_secret);
    print(manifest_format(format), &v, "", &[])
}

pub(super) fn config(cmd: &ConfigCommand, cfg_path: &Path, format: Format) -> anyhow::Result<()> {
    match cmd {
        ConfigCommand::Create {
            from_token,
            server,
            ca,
            org,
            output,
            force,
        } => {
            super::common::refuse_existing(output.to_str(), *force)?;
            let (access_id, token) = super::common::login_of(from_token)?;
            let ca_data = ca
                .as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()?
                .map(|d| base64::engine::general_purpose::STANDARD.encode(d));
            let cfg =
                crate::kube::config::robot_config(server, ca_data, &access_id, &token, org.clone())
                    .map_err(Usage)?;
            if output == Path::new("-") {
                crate::cli_print(serde_norway::to_string(&cfg)?.trim_end());
            } else {
                cfg.save(output)?;
                crate::cli_eprint(&format!("wrote {}", output.display()));
            }
            Ok(())
        }
        ConfigCommand::View { raw, minify } => {
            let mut cfg = ClientConfig::load(cfg_path)?;
            if *minify {
                let (ctx, _, _) = cfg.current()?;
                let (name, server, cred) = (
                    ctx.name.clone(),
                    ctx.context.server.clone(),
                    ctx.context.credential.clone(),
                );
                cfg.contexts.retain(|c| c.name == name);
                cfg.servers.retain(|s| s.name == server);
                cfg.credentials.retain(|c| c.name == cred);
            }
            if !raw {
                for c in &mut cfg.credentials {
                    let redact = |s: &mut String| *s = "REDACTED".into();
                    c.credential.refresh_token.as_mut().map(redact);
                    c.credential.api_key.as_mut().map(redact);
                    c.credential.registry_token.as_mut().map(redact);
                    c.credential.access_token.as_mut().map(redact);
                    if let Some(r) = c.credential.robot_token.as_mut() {
                        redact(&mut r.token);
                    }
                }
            }
            let v = serde_json::to_value(&cfg)?;
            print(manifest_format(format), &v, "", &[])
        }
        ConfigCommand::GetContexts => {
            let cfg = ClientConfig::load(cfg_path)?;
            let rows: Vec<Value> = cfg
                .contexts
                .iter()
                .map(|c| {
                    let current = if cfg.current_context.as_deref() == Some(c.name.as_str()) { "*" } else { "" };
                    json!({ "current": current, "name": c.name, "server": c.context.server, "credential": c.context.credential, "org": c.context.org })
                })
                .collect();
            let columns = [
                ("CURRENT", "current"),
                ("NAME", "name"),
                ("SERVER", "server"),
                ("CREDENTIAL", "credential"),
                ("ORG", "org"),
            ];
            print(format, &json!({ "contexts": rows }), "contexts", &columns)
        }
        ConfigCommand::UseContext { name } => {
            let mut cfg = ClientConfig::load(cfg_path)?;
            if !cfg.contexts.iter().any(|c| c.name == *name) {
                return Err(Usage(format!("no context named {name:?}")).into());
            }
            cfg.current_context = Some(name.clone());
            cfg.save(cfg_path)?;
            crate::cli_eprint(&format!("switched to context {name:?}"));
            Ok(())
        }
    }
}
