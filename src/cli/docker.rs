//! Docker and friends: `berth docker-config` (merges an `auths` entry, or a `credHelpers` entry
//! for user sessions, into `~/.docker/config.json`, also usable as a containers `auth.json`),
//! the credential helper `docker-credential-berth` (get/store/erase/list on stdin/stdout), and
//! `berth completion`.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use base64::Engine as _;
use serde_json::{Value, json};

use super::context::{self, ClientConfig, Credential, RobotToken};
use super::errors::Usage;
use crate::client::{Auth, Client};

#[derive(Debug, Clone, clap::Args)]
pub struct DockerConfigArgs {
    /// The docker config to update [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json]
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Use this token file's credentials instead of the current context's.
    #[arg(short = 'f', value_name = "TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The registry host to write the entry for [default: the current context's server]; with
    /// -f, no context is needed.
    #[arg(long, value_name = "HOST")]
    pub server: Option<String>,
    /// Print the entry instead of writing it.
    #[arg(long)]
    pub print: bool,
}

/// (user name, secret) a registry client should send for a stored credential, if it has one
/// that is safe to hand over (a user's refresh token is not: that goes through the helper).
fn static_login(cred: &Credential) -> Option<(String, String)> {
    if let Some(r) = &cred.robot_token {
        return Some((r.access_id.clone(), r.token.clone()));
    }
    if let Some(k) = &cred.api_key {
        return Some(("iamapikey".to_owned(), k.clone()));
    }
    if let Some(w) = &cred.workload {
        return Some((w.robot.clone(), w.token.clone()));
    }
    cred.registry_token
        .as_ref()
        .map(|t| ("token".to_owned(), t.clone()))
}

/// The name of the context `docker login` stores a typed credential under.
fn docker_context(host: &str) -> String {
    format!("docker@{host}")
}

/// Makes sure docker finds `docker-credential-berth` (this binary under that name) on `PATH`:
/// found there already; else a link next to this binary if that directory is on `PATH` and
/// writable; else a link in `~/.local/bin`. Says what it found or did, or the command to run.
fn ensure_helper_link() -> String {
    const NAME: &str = "docker-credential-berth";
    let path_dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect())
        .unwrap_or_default();
    if let Some(found) = path_dirs.iter().map(|d| d.join(NAME)).find(|p| p.is_file()) {
        return format!("docker finds the credential helper at {}", found.display());
    }
    let Ok(exe) = std::env::current_exe() else {
        return format!(
            "link the berth binary as {NAME} on your PATH: ln -s \"$(command -v berth)\" ~/.local/bin/{NAME}"
        );
    };
    let mut candidates = Vec::new();
    if let Some(dir) = exe.parent().filter(|d| path_dirs.iter().any(|p| p == d)) {
        candidates.push(dir.to_owned());
    }
    if let Some(home) = std::env::var_os("HOME") {
        candidates.push(PathBuf::from(home).join(".local/bin"));
    }
    for dir in candidates {
        let link = dir.join(NAME);
        let made = std::fs::create_dir_all(&dir)
            .and_then(|()| std::os::unix::fs::symlink(&exe, &link))
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    Ok(())
                } else {
                    Err(e)
                }
            });
        if made.is_ok() {
            let on_path = path_dirs.contains(&dir);
            return if on_path {
                format!(
                    "linked the credential helper: {} -> {}",
                    link.display(),
                    exe.display()
                )
            } else {
                format!(
                    "linked the credential helper: {} -> {}; add {} to your PATH so that docker finds it",
                    link.display(),
                    exe.display(),
                    dir.display()
                )
            };
        }
    }
    format!(
        "docker cannot find {NAME}: create it with\n  ln -s {} ~/.local/bin/{NAME}   # and have ~/.local/bin on your PATH",
        exe.display()
    )
}

pub(super) fn docker_config(args: &DockerConfigArgs, cfg_path: &Path) -> anyhow::Result<()> {
    let (host, login) = match (&args.server, &args.token_file) {
        // A token file and a host: everything the entry needs, no context.
        (Some(server), Some(f)) => (normalize(server), Some(super::common::login_of(f)?)),
        _ => {
            let cfg = ClientConfig::load(cfg_path)?;
            let (_, server, cred) = cfg.current()?;
            let host = args
                .server
                .as_deref()
                .map_or_else(|| server.host(), normalize);
            let login = match &args.token_file {
                Some(f) => Some(super::common::login_of(f)?),
                None => static_login(cred),
            };
            (host, login)
        }
    };
    let entry = match &login {
        Some((u, p)) => {
            json!({ "auths": { &host: { "auth": base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}")) } } })
        }
        // A user session: docker asks the helper for a short-lived token each time.
        None => json!({ "credHelpers": { &host: "berth" } }),
    };
    if args.print {
        crate::cli_print(&serde_json::to_string_pretty(&entry)?);
        return Ok(());
    }
    super::common::merge_entry(args.file.as_deref(), &entry)?;
    crate::cli_eprint(&format!(
        "{} now has credentials for {host}",
        super::common::docker_config_path(args.file.as_deref())?.display()
    ));
    if login.is_none() {
        // docker runs the helper by name: make sure it can.
        crate::cli_eprint(&ensure_helper_link());
    }
    Ok(())
}

fn normalize(server: &str) -> String {
    server
        .trim()
        .split("://")
        .last()
        .unwrap_or(server)
        .trim_end_matches('/')
        .to_owned()
}

/// `docker-credential-berth ACTION`: the docker credential-helper protocol.
pub fn credential_helper(action: &str) -> ExitCode {
    match helper(action) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Docker shows stdout on failure; "credentials not found" is the protocol's own message.
            crate::cli_print(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

fn helper(action: &str) -> anyhow::Result<()> {
    let cfg_path = context::path(None)?;
    let mut input = String::new();
    if action != "list" {
        std::io::stdin()
            .read_to_string(&mut input)
            .context("reading standard input")?;
    }
    let mut cfg = ClientConfig::load(&cfg_path)?;
    match action {
        "get" => {
            let host = normalize(&input);
            // Exactly the identity the user chose: what `docker login` stored for this host
            // (docker asks for what it stored), else the current context when it is for this
            // host; never another context that happens to name the host (that would act as
            // someone else).
            let stored = docker_context(&host);
            let current = cfg.current_context.clone().unwrap_or_default();
            let for_host = |name: &str| {
                cfg.contexts
                    .iter()
                    .find(|c| c.name == name)
                    .and_then(|ctx| {
                        let server = cfg.servers.iter().find(|s| s.name == ctx.context.server)?;
                        let cred = cfg
                            .credentials
                            .iter()
                            .find(|c| c.name == ctx.context.credential)?;
                        (server.server.host() == host)
                            .then(|| (server.server.clone(), cred.credential.clone()))
                    })
            };
            let stored_here = for_host(&stored);
            let is_stored = stored_here.is_some();
            let found = stored_here.or_else(|| for_host(&current));
            let (server, cred) =
                found.ok_or_else(|| anyhow::anyhow!("credentials not found in native keychain"))?;
            // What docker stored as an identity token goes back to it as one (docker exchanges
            // it at /token itself).
            if is_stored && let Some(refresh) = &cred.refresh_token {
                crate::cli_print(
                    &json!({ "ServerURL": input.trim(), "Username": "<token>", "Secret": refresh })
                        .to_string(),
                );
                return Ok(());
            }
            let (user, secret) = match static_login(&cred) {
                Some(l) => l,
                None => {
                    let refresh = cred
                        .refresh_token
                        .clone()
                        .context("credentials not found in native keychain")?;
                    let client = Client::new(
                        &server.url,
                        Auth::Basic("iamrefresh".into(), refresh),
                        &server.tls()?,
                        false,
                    )?;
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()?;
                    let v = rt.block_on(client.api("POST", "/auth/access-token", None, &[]))?;
                    (
                        "iambearer".to_owned(),
                        v["access_token"]
                            .as_str()
                            .context("no access token")?
                            .to_owned(),
                    )
                }
            };
            crate::cli_print(
                &json!({ "ServerURL": input.trim(), "Username": user, "Secret": secret })
                    .to_string(),
            );
            Ok(())
        }
        "store" => {
            let v: Value = serde_json::from_str(&input)
                .context("store expects {\"ServerURL\",\"Username\",\"Secret\"}")?;
            let (url, user, secret) = (
                v["ServerURL"].as_str().unwrap_or_default(),
                v["Username"].as_str().unwrap_or_default(),
                v["Secret"].as_str().unwrap_or_default(),
            );
            let credential = match user {
                // docker's identity token: berth answered its login (offline_token=true) with a
                // refresh token, a session tied to the secret that was typed.
                "<token>" | "iamrefresh" => Credential {
                    refresh_token: Some(secret.to_owned()),
                    ..Credential::default()
                },
                "iamapikey" => Credential {
                    api_key: Some(secret.to_owned()),
                    ..Credential::default()
                },
                "token" => Credential {
                    registry_token: Some(secret.to_owned()),
                    ..Credential::default()
                },
                u if uuid::Uuid::try_parse(u).is_ok() => Credential {
                    robot_token: Some(RobotToken {
                        access_id: u.to_owned(),
                        token: secret.to_owned(),
                    }),
                    ..Credential::default()
                },
                _ => anyhow::bail!(
                    "berth stores no passwords: a user's password stays with `berth login`, which keeps a revocable session (run it, then `berth docker-config`); for docker login use a typed secret: -u iamapikey with an API key, -u token with a registry token, or a robot token's accessId"
                ),
            };
            let host = normalize(url);
            let full = if url.contains("://") {
                url.trim_end_matches('/').to_owned()
            } else {
                format!("https://{host}")
            };
            let name = docker_context(&host);
            if !cfg.servers.iter().any(|s| s.name == host) {
                cfg.upsert_server(
                    &host,
                    context::Server {
                        url: full,
                        certificate_authority_data: None,
                        insecure_skip_tls_verify: false,
                    },
                );
            }
            cfg.upsert_credential(&name, credential);
            cfg.upsert_context(
                &name,
                context::Context {
                    server: host,
                    credential: name.clone(),
                    org: None,
                },
            );
            if cfg.current_context.is_none() {
                cfg.current_context = Some(name);
            }
            cfg.save(&cfg_path)
        }
        "erase" => {
            // `docker logout` forgets what `docker login` stored; a `berth login` session stays
            // (`berth logout` ends it).
            let host = normalize(&input);
            let stored = docker_context(&host);
            let gone: Vec<String> = cfg
                .contexts
                .iter()
                .filter(|c| c.name == stored)
                .map(|c| c.context.credential.clone())
                .collect();
            cfg.credentials.retain(|c| !gone.contains(&c.name));
            cfg.contexts
                .retain(|c| !gone.contains(&c.context.credential));
            if cfg
                .current_context
                .as_ref()
                .is_some_and(|cur| !cfg.contexts.iter().any(|c| &c.name == cur))
            {
                cfg.current_context = None;
            }
            cfg.save(&cfg_path)
        }
        "list" => {
            let mut out = serde_json::Map::new();
            for ctx in &cfg.contexts {
                let server = cfg.servers.iter().find(|s| s.name == ctx.context.server);
                let cred = cfg
                    .credentials
                    .iter()
                    .find(|c| c.name == ctx.context.credential);
                if let (Some(s), Some(c)) = (server, cred) {
                    let user = static_login(&c.credential)
                        .map_or_else(|| "iambearer".to_owned(), |(u, _)| u);
                    out.insert(s.server.url.clone(), json!(user));
                }
            }
            crate::cli_print(&Value::Object(out).to_string());
            Ok(())
        }
        other => Err(Usage(format!(
            "unknown action {other:?}: use get, store, erase or list"
        ))
        .into()),
    }
}
