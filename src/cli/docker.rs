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

use super::Usage;
use super::context::{self, ClientConfig, Credential, RobotToken};
use crate::client::{Auth, Client};

#[derive(Debug, Clone, clap::Args)]
pub struct DockerConfigArgs {
    /// The docker config to update [default: $DOCKER_CONFIG/config.json, else ~/.docker/config.json]
    #[arg(long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// Use this token file's credentials instead of the current context's.
    #[arg(short = 'f', value_name = "TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print the entry instead of writing it.
    #[arg(long)]
    pub print: bool,
}

fn docker_config_path(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(p) = flag {
        return Ok(p.to_owned());
    }
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("config.json"));
    }
    let home = std::env::var_os("HOME").context("HOME is not set; give --file PATH")?;
    Ok(PathBuf::from(home).join(".docker/config.json"))
}

/// (user name, secret) a registry client should send for a stored credential, if it has one
/// that is safe to hand over (a user's refresh token is not: that goes through the helper).
fn static_login(cred: &Credential) -> Option<(String, String)> {
    if let Some(r) = &cred.robot_token {
        return Some((r.access_id.clone(), r.token.clone()));
    }
    cred.api_key
        .as_ref()
        .map(|k| ("iamapikey".to_owned(), k.clone()))
}

pub(super) fn docker_config(args: &DockerConfigArgs, cfg_path: &Path) -> anyhow::Result<()> {
    let cfg = ClientConfig::load(cfg_path)?;
    let (_, server, cred) = cfg.current()?;
    let host = server.host();
    let login = match &args.token_file {
        Some(f) => Some(super::files::login_of(f)?),
        None => static_login(cred),
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
    let path = docker_config_path(args.file.as_deref())?;
    let mut doc: Value = match std::fs::read_to_string(&path) {
        Ok(text) => serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", path.display()))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => json!({}),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    if !doc.is_object() {
        return Err(Usage(format!("{} is not a JSON object", path.display())).into());
    }
    for key in ["auths", "credHelpers"] {
        if let Some(Value::Object(new)) = entry.get(key) {
            let slot = doc
                .as_object_mut()
                .map(|m| m.entry(key).or_insert_with(|| json!({})));
            if let Some(Value::Object(existing)) = slot {
                for (k, v) in new {
                    existing.insert(k.clone(), v.clone());
                }
            }
        }
    }
    context::write_private(
        &path,
        (serde_json::to_string_pretty(&doc)? + "\n").as_bytes(),
    )?;
    crate::cli_eprint(&format!(
        "{} now has credentials for {host}",
        path.display()
    ));
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
            let found = cfg.contexts.iter().find_map(|ctx| {
                let server = cfg.servers.iter().find(|s| s.name == ctx.context.server)?;
                let cred = cfg
                    .credentials
                    .iter()
                    .find(|c| c.name == ctx.context.credential)?;
                (server.server.host() == host)
                    .then(|| (server.server.clone(), cred.credential.clone()))
            });
            let (server, cred) =
                found.ok_or_else(|| anyhow::anyhow!("credentials not found in native keychain"))?;
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
                "iamrefresh" => Credential {
                    refresh_token: Some(secret.to_owned()),
                    ..Credential::default()
                },
                "iamapikey" => Credential {
                    api_key: Some(secret.to_owned()),
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
                    "berth stores no passwords: log in with `berth login`, which keeps a revocable session"
                ),
            };
            let host = normalize(url);
            let full = if url.contains("://") {
                url.trim_end_matches('/').to_owned()
            } else {
                format!("https://{host}")
            };
            let name = format!("docker@{host}");
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
            let host = normalize(&input);
            let gone: Vec<String> = cfg
                .contexts
                .iter()
                .filter(|c| {
                    cfg.servers
                        .iter()
                        .any(|s| s.name == c.context.server && s.server.host() == host)
                })
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

/// `berth completion SHELL`.
pub(super) fn completion(shell: clap_complete::Shell) {
    use clap::CommandFactory as _;
    let mut cmd = super::Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, "berth", &mut out);
    crate::cli_print(String::from_utf8_lossy(&out).trim_end());
}
