//! `berth login`, `logout`, `whoami`.

use std::io::IsTerminal as _;
use std::path::Path;

use anyhow::Context as _;
use serde_json::json;

use super::context::{self, ClientConfig, Context, Credential, Server};
use super::errors::Usage;
use super::output::{Format, print};
use crate::client::{Auth, Client};

#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// The server's URL (default: the current context's server).
    pub url: Option<String>,
    /// The organization to work in.
    #[arg(short = 'a', long = "account", value_name = "ORG")]
    pub org: Option<String>,
    /// The user name (default: the current context's, else asked).
    #[arg(short, long)]
    pub username: Option<String>,
    /// Read the password from standard input (one line).
    #[arg(long)]
    pub password_stdin: bool,
    /// PEM file of the CA that signed the server's TLS certificate.
    #[arg(long, value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
    /// Do not verify the server's TLS certificate (for tests only).
    #[arg(long)]
    pub insecure_skip_tls_verify: bool,
    /// A file holding the workload's token from its platform (a CI job's OIDC token, a
    /// Kubernetes service-account token); with --robot, log in as that robot with no stored
    /// secret. The token itself may come in BERTH_FEDERATED_TOKEN instead.
    #[arg(long, value_name = "FILE", requires = "robot")]
    pub federated_token_file: Option<std::path::PathBuf>,
    /// With a federated token: the robot (ORG/ROBOT) whose trust accepts it.
    #[arg(long, value_name = "ORG/ROBOT")]
    pub robot: Option<String>,
    /// The server's URL (the same as the positional URL).
    #[arg(long = "server", value_name = "URL", conflicts_with = "url")]
    pub server: Option<String>,
    /// With a federated token: also write a docker/podman auth entry for the server
    /// [file: $DOCKER_CONFIG/config.json, else ~/.docker/config.json].
    #[arg(long)]
    pub docker_config: bool,
    /// Sign in through the organization's identity provider (single sign-on; the provider's
    /// name when the server has several): the device authorization grant, approved in a browser
    /// anywhere. Only berth's own session is stored, never the provider's tokens.
    #[arg(long, value_name = "PROVIDER", num_args = 0..=1, default_missing_value = "",
          conflicts_with_all = ["username", "password_stdin", "robot"])]
    pub sso: Option<String>,
}

pub(super) async fn login(args: &LoginArgs, cfg_path: &Path, verbose: bool) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::load(cfg_path)?;
    let url_arg = args.url.clone().or_else(|| args.server.clone());
    if let Some(robot) = &args.robot {
        let url = url_arg.or_else(|| cfg.current().ok().map(|(_, s, _)| s.url.clone()));
        return federated_login(args, robot, url, cfg, cfg_path, verbose).await;
    }
    let url = match (&url_arg, cfg.current()) {
        (Some(u), _) => u.trim_end_matches('/').to_owned(),
        (None, Ok((_, server, _))) => server.url.clone(),
        (None, Err(_)) => {
            return Err(Usage("give the server URL: berth login URL -a ORG".into()).into());
        }
    };
    let server = server_entry(args, &url)?;
    if let Some(provider) = &args.sso {
        return sso_login(args, provider, &url, server, cfg, cfg_path, verbose).await;
    }
    // Logging in again to the current context's server: its user and its organization are the
    // defaults, and that context is the one refreshed (not a new one beside it).
    let current = cfg
        .current()
        .ok()
        .filter(|(_, s, _)| s.url == url)
        .map(|(c, _, _)| c.clone());
    let current_user = current.as_ref().and_then(|c| {
        c.context
            .credential
            .rsplit_once('@')
            .map(|(u, _)| u.to_owned())
    });
    let username = match (&args.username, &current_user) {
        (Some(u), _) => u.clone(),
        (None, Some(u)) => u.clone(),
        (None, None) if std::io::stdin().is_terminal() && !args.password_stdin => {
            eprint_prompt("username: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line)?;
            line.trim().to_owned()
        }
        (None, None) => return Err(Usage("give the user name with -u USER".into()).into()),
    };
    // The current context's organization stays, unless -a names another or the user changed.
    let same = current
        .as_ref()
        .filter(|_| current_user.as_deref() == Some(username.as_str()));
    let org = args
        .org
        .clone()
        .or_else(|| same.and_then(|c| c.context.org.clone()));
    // At a terminal, choosing an organization for a user already signed in here needs no new
    // sign-in: that session, checked against the organization, serves the new context too.
    let host = server.host();
    let cred_name = format!("{username}@{host}");
    let live = cfg
        .credentials
        .iter()
        .find(|c| c.name == cred_name)
        .and_then(|c| c.credential.refresh_token.clone());
    if let (Some(o), Some(refresh), false) = (&args.org, &live, args.password_stdin) {
        let client = Client::new(
            &url,
            Auth::Basic("iamrefresh".into(), refresh.clone()),
            &server.tls()?,
            verbose,
        )?;
        if client
            .api("GET", &format!("/orgs/{o}"), None, &[])
            .await
            .is_ok()
        {
            cfg.upsert_server(&host, server);
            cfg.upsert_context(
                o,
                Context {
                    server: host,
                    credential: cred_name,
                    org: Some(o.clone()),
                },
            );
            cfg.current_context = Some(o.clone());
            cfg.save(cfg_path)?;
            crate::cli_eprint(&format!(
                "{username} works in {o} now (context {o:?}; already signed in)"
            ));
            return Ok(());
        }
    }
    let password = super::common::read_secret("password", args.password_stdin)?;
    let client = Client::new(&url, Auth::None, &server.tls()?, verbose)?;
    let session = match client
        .api(
            "POST",
            "/auth/login",
            Some(&json!({ "username": username, "password": password })),
            &[],
        )
        .await
    {
        Err(crate::client::ClientError::Status { status: 401, .. }) => {
            return Err(crate::client::ClientError::Status {
                status: 401,
                code: "unauthorized".into(),
                message: format!("the user name {username:?} or its password is wrong"),
            }
            .into());
        }
        other => other?,
    };
    let refresh = session["refresh_token"]
        .as_str()
        .context("the server sent no refresh token")?
        .to_owned();
    if let Some(org) = &args.org {
        // Check the organization now rather than on the first command.
        let client = Client::new(
            &url,
            Auth::Basic("iamrefresh".into(), refresh.clone()),
            &server.tls()?,
            verbose,
        )?;
        client
            .api("GET", &format!("/orgs/{org}"), None, &[])
            .await?;
    }
    let server_name = host.clone();
    let ctx_name = match (&args.org, same) {
        (Some(o), _) => o.clone(),
        (None, Some(c)) => c.name.clone(),
        (None, None) => cred_name.clone(),
    };
    // The session this login replaces ends on the server too, rather than living on unseen
    // for its 14 days (best effort: it may have ended already).
    let previous = cfg
        .credentials
        .iter()
        .find(|c| c.name == cred_name)
        .and_then(|c| c.credential.refresh_token.clone())
        .filter(|old| *old != refresh);
    if let Some(old) = previous {
        let client = Client::new(&url, Auth::None, &server.tls()?, verbose)?;
        let _ = client
            .api(
                "POST",
                "/auth/logout",
                Some(&json!({ "refresh_token": old })),
                &[],
            )
            .await;
    }
    cfg.upsert_server(&server_name, server);
    cfg.upsert_credential(
        &cred_name,
        Credential {
            refresh_token: Some(refresh),
            ..Credential::default()
        },
    );
    cfg.upsert_context(
        &ctx_name,
        Context {
            server: server_name,
            credential: cred_name,
            org,
        },
    );
    cfg.current_context = Some(ctx_name.clone());
    cfg.save(cfg_path)?;
    crate::cli_eprint(&format!("{username} logged in (context {ctx_name:?})"));
    Ok(())
}

/// `berth login --sso`: a device sign-in at the server's identity provider (RFC 8628). The
/// server talks to the provider; this command shows the code, polls the server and stores the
/// session the server answers.
async fn sso_login(
    args: &LoginArgs,
    provider: &str,
    url: &str,
    server: Server,
    cfg: ClientConfig,
    cfg_path: &Path,
    verbose: bool,
) -> anyhow::Result<()> {
    let client = Client::new(url, Auth::None, &server.tls()?, verbose)?;
    let listed = client.api("GET", "/auth/sso", None, &[]).await?;
    let names: Vec<String> = listed["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["name"].as_str().map(str::to_owned))
        .collect();
    let provider = match (provider, names.as_slice()) {
        (_, []) => {
            return Err(Usage(format!("{url} offers no single sign-on")).into());
        }
        ("", [only]) => only.clone(),
        ("", _) => {
            return Err(Usage(format!(
                "{url} has several identity providers: give one with --sso NAME ({})",
                names.join(", ")
            ))
            .into());
        }
        (p, _) if names.iter().any(|n| n == p) => p.to_owned(),
        (p, _) => {
            return Err(Usage(format!(
                "no identity provider {p:?} at {url} ({})",
                names.join(", ")
            ))
            .into());
        }
    };
    let start = match client
        .api("POST", &format!("/auth/sso/{provider}/device"), None, &[])
        .await
    {
        Ok(v) => v,
        // No device grant at this provider: the browser, back to a loopback address.
        Err(crate::client::ClientError::Status {
            status: 400,
            message,
            ..
        }) if message.contains("no device authorization") => {
            let session = loopback_sign_in(&client, url, &provider).await?;
            return store_sso_session(
                args, &provider, url, server, cfg, cfg_path, verbose, session,
            )
            .await;
        }
        Err(e) => return Err(e.into()),
    };
    let field = |k: &str| start[k].as_str().unwrap_or_default().to_owned();
    let (handle, code) = (field("handle"), field("user_code"));
    let open = start["verification_uri_complete"]
        .as_str()
        .map_or_else(|| field("verification_uri"), str::to_owned);
    crate::cli_eprint(&format!(
        "To sign in, open {open}\nand confirm the code {code} (it works for {} minutes).",
        start["expires_in"].as_i64().unwrap_or(600) / 60
    ));
    let mut interval = start["interval"].as_i64().unwrap_or(5).clamp(1, 60);
    let deadline = std::time::Instant::now()
        + std::time::Duration::from_secs(
            u64::try_from(start["expires_in"].as_i64().unwrap_or(600)).unwrap_or(600),
        );
    let session = loop {
        tokio::time::sleep(std::time::Duration::from_secs(interval.unsigned_abs())).await;
        match client
            .api(
                "POST",
                &format!("/auth/sso/{provider}/token"),
                Some(&json!({ "handle": handle })),
                &[],
            )
            .await
        {
            Ok(v) => break v,
            Err(crate::client::ClientError::Status { code, .. })
                if code == "authorization_pending" && std::time::Instant::now() < deadline => {}
            Err(crate::client::ClientError::Status { code, .. })
                if code == "slow_down" && std::time::Instant::now() < deadline =>
            {
                interval += 5;
            }
            Err(crate::client::ClientError::Status { code, .. })
                if code == "authorization_pending" || code == "expired_token" =>
            {
                return Err(crate::client::ClientError::Status {
                    status: 401,
                    code: "expired_token".into(),
                    message: "the sign-in was not approved in time; run berth login --sso again"
                        .into(),
                }
                .into());
            }
            Err(crate::client::ClientError::Status { status: 401, .. }) => {
                return Err(crate::client::ClientError::Status {
                    status: 401,
                    code: "access_denied".into(),
                    message: "the identity provider did not sign you in".into(),
                }
                .into());
            }
            Err(e) => return Err(e.into()),
        }
    };
    store_sso_session(
        args, &provider, url, server, cfg, cfg_path, verbose, session,
    )
    .await
}

/// Stores the session a single sign-on gave, under the user the server says signed in.
#[allow(clippy::too_many_arguments)]
async fn store_sso_session(
    args: &LoginArgs,
    provider: &str,
    url: &str,
    server: Server,
    mut cfg: ClientConfig,
    cfg_path: &Path,
    verbose: bool,
    session: serde_json::Value,
) -> anyhow::Result<()> {
    let refresh = session["refresh_token"]
        .as_str()
        .context("the server sent no refresh token")?
        .to_owned();
    let me = Client::new(
        url,
        Auth::Basic("iamrefresh".into(), refresh.clone()),
        &server.tls()?,
        verbose,
    )?;
    let who = me.api("GET", "/auth/whoami", None, &[]).await?;
    let username = who["name"]
        .as_str()
        .context("the server did not say who signed in")?
        .to_owned();
    if let Some(org) = &args.org {
        me.api("GET", &format!("/orgs/{org}"), None, &[]).await?;
    }
    let host = server.host();
    let cred_name = format!("{username}@{host}");
    let ctx_name = args.org.clone().unwrap_or_else(|| cred_name.clone());
    cfg.upsert_server(&host, server);
    cfg.upsert_credential(
        &cred_name,
        Credential {
            refresh_token: Some(refresh),
            ..Credential::default()
        },
    );
    cfg.upsert_context(
        &ctx_name,
        Context {
            server: host,
            credential: cred_name,
            org: args.org.clone(),
        },
    );
    cfg.current_context = Some(ctx_name.clone());
    cfg.save(cfg_path)?;
    crate::cli_eprint(&format!(
        "{username} signed in through {provider} (context {ctx_name:?})"
    ));
    Ok(())
}

/// `berth login --sso` where the provider has no device grant (RFC 8252): a one-shot listener
/// on a loopback port, the browser sent through berth's console sign-in with this command's PKCE
/// challenge and state, back to the listener with a one-time code that only this command's
/// verifier redeems.
async fn loopback_sign_in(
    client: &Client,
    url: &str,
    provider: &str,
) -> anyhow::Result<serde_json::Value> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let random = || -> anyhow::Result<String> {
        crate::auth::oidc::random_token().context("the operating system gave no randomness")
    };
    let (verifier, state) = (random()?, random()?);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let mut start = reqwest::Url::parse(&format!("{url}/ui/login/sso/{provider}"))?;
    start
        .query_pairs_mut()
        .append_pair("cli_redirect", &format!("http://127.0.0.1:{port}/callback"))
        .append_pair("cli_challenge", &crate::auth::oidc::challenge(&verifier))
        .append_pair("cli_state", &state);
    crate::cli_eprint(&format!(
        "To sign in, open {start}\nin a browser on this computer (waiting up to 10 minutes)."
    ));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(600);
    let code = loop {
        let (mut conn, _) = tokio::time::timeout_at(deadline, listener.accept())
            .await
            .map_err(|_| {
                anyhow::anyhow!("the sign-in was not finished in time; run berth login --sso again")
            })??;
        let mut buf = vec![0u8; 16 * 1024];
        let mut got = 0;
        while got < buf.len() && !buf[..got].windows(4).any(|w| w == b"\r\n\r\n") {
            match tokio::time::timeout(
                std::time::Duration::from_secs(10),
                conn.read(&mut buf[got..]),
            )
            .await
            {
                Ok(Ok(0)) | Err(_) => break,
                Ok(Ok(n)) => got += n,
                Ok(Err(_)) => break,
            }
        }
        let head = String::from_utf8_lossy(&buf[..got]).to_string();
        let target = head
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_owned();
        let query: std::collections::HashMap<String, String> = target
            .strip_prefix("/callback?")
            .and_then(|q| serde_urlencoded::from_str(q).ok())
            .unwrap_or_default();
        let ours = query.get("state").is_some_and(|s| *s == state);
        let page = if ours {
            "Signed in to berth: you can close this tab and go back to the terminal."
        } else {
            "This is not the sign-in berth login is waiting for."
        };
        let _ = conn
            .write_all(
                format!(
                    "HTTP/1.1 {}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}",
                    if ours { "200 OK" } else { "400 Bad Request" },
                    page.len()
                )
                .as_bytes(),
            )
            .await;
        if !ours {
            continue;
        }
        match query.get("code") {
            Some(c) => break c.clone(),
            None => {
                return Err(Usage(format!(
                    "the sign-in failed: {}",
                    query
                        .get("error")
                        .map_or("no code came back", String::as_str)
                ))
                .into());
            }
        }
    };
    Ok(client
        .api(
            "POST",
            &format!("/auth/sso/{provider}/code"),
            Some(&json!({ "code": code, "code_verifier": verifier })),
            &[],
        )
        .await?)
}

/// The server entry `berth login` stores: its URL (http or https) and the CA given with --ca.
fn server_entry(args: &LoginArgs, url: &str) -> anyhow::Result<Server> {
    if !url.starts_with("http://") && !url.starts_with("https://") {
        return Err(Usage(format!(
            "{url:?} is not a URL; it must start with https:// or http://"
        ))
        .into());
    }
    let ca_data = args
        .ca
        .as_ref()
        .map(std::fs::read)
        .transpose()
        .context("reading the CA file")?;
    Ok(Server {
        url: url.to_owned(),
        certificate_authority_data: ca_data
            .as_ref()
            .map(|d| base64::Engine::encode(&base64::engine::general_purpose::STANDARD, d)),
        insecure_skip_tls_verify: args.insecure_skip_tls_verify,
    })
}

/// `berth login --federated-token-file FILE --robot ORG/ROBOT`: checks that the server
/// exchanges the workload's token for the robot, then stores the robot and the token (sent as
/// Basic `ORG/ROBOT` + token; the server exchanges it at each login) in the client config and,
/// with --docker-config, in docker's.
async fn federated_login(
    args: &LoginArgs,
    robot: &str,
    url: Option<String>,
    mut cfg: ClientConfig,
    cfg_path: &Path,
    verbose: bool,
) -> anyhow::Result<()> {
    let url = url
        .map(|u| u.trim_end_matches('/').to_owned())
        .ok_or_else(|| Usage("give the server: --server URL".into()))?;
    let server = server_entry(args, &url)?;
    let Some((org, _)) = robot.split_once('/') else {
        return Err(Usage(format!("--robot {robot:?} must be ORG/ROBOT")).into());
    };
    let token = match &args.federated_token_file {
        Some(f) => {
            std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?
        }
        None => std::env::var("BERTH_FEDERATED_TOKEN").map_err(|_| {
            Usage(
                "give the workload's token: --federated-token-file FILE or BERTH_FEDERATED_TOKEN"
                    .into(),
            )
        })?,
    };
    let token = token.trim().to_owned();
    if crate::auth::workload::unverified_claims(&token).is_none() {
        return Err(Usage("the federated token is not a JWT".into()).into());
    }
    let client = Client::new(
        &url,
        Auth::Basic(robot.to_owned(), token.clone()),
        &server.tls()?,
        verbose,
    )?;
    let answer = match client.call("GET", &format!("{url}/token"), None, &[]).await {
        Err(crate::client::ClientError::Status { status: 401, .. }) => {
            return Err(crate::client::ClientError::Status {
                status: 401,
                code: "unauthorized".into(),
                message: format!(
                    "no trust of robot {robot:?} accepts this token (issuer, audience, subject, claims or times)"
                ),
            }
            .into());
        }
        other => other?,
    };
    let host = server.host();
    let cred_name = format!("{robot}@{host}");
    cfg.upsert_server(&host, server);
    cfg.upsert_credential(
        &cred_name,
        Credential {
            workload: Some(context::WorkloadCredential {
                robot: robot.to_owned(),
                token: token.clone(),
            }),
            ..Credential::default()
        },
    );
    let ctx_name = cred_name.clone();
    cfg.upsert_context(
        &ctx_name,
        Context {
            server: host.clone(),
            credential: cred_name,
            org: Some(org.to_owned()),
        },
    );
    cfg.current_context = Some(ctx_name.clone());
    cfg.save(cfg_path)?;
    let expires = crate::auth::workload::unverified_claims(&token)
        .and_then(|c| c["exp"].as_i64())
        .map(|e| e - crate::store::now())
        .unwrap_or(0);
    crate::cli_eprint(&format!(
        "logged in as robot {robot} with the workload's token (context {ctx_name:?}; the token expires in {expires} s, registry tokens last {} s)",
        answer["expires_in"].as_i64().unwrap_or(0)
    ));
    if args.docker_config {
        let path = super::common::write_auth(None, &host, robot, &token)?;
        crate::cli_eprint(&format!(
            "{} now has credentials for {host}",
            path.display()
        ));
    }
    Ok(())
}

fn eprint_prompt(text: &str) {
    use std::io::Write as _;
    let mut e = std::io::stderr();
    let _ = e.write_all(text.as_bytes());
    let _ = e.flush();
}

pub(super) async fn logout(cfg_path: &Path, verbose: bool) -> anyhow::Result<()> {
    let mut cfg = ClientConfig::load(cfg_path)?;
    let (ctx, server, cred) = cfg.current()?;
    let cred_name = ctx.context.credential.clone();
    if let Some(refresh) = &cred.refresh_token {
        let client = Client::new(&server.url, Auth::None, &server.tls()?, verbose)?;
        // Revoke on the server; forget it locally even if it was already invalid.
        if let Err(e) = client
            .api(
                "POST",
                "/auth/logout",
                Some(&json!({ "refresh_token": refresh })),
                &[],
            )
            .await
        {
            crate::cli_eprint(&format!(
                "warning: the server did not revoke the session: {e}"
            ));
        }
    }
    cfg.credentials.retain(|c| c.name != cred_name);
    let ctx_name = cfg.current_context.take();
    cfg.contexts.retain(|c| Some(&c.name) != ctx_name.as_ref());
    cfg.save(cfg_path)?;
    crate::cli_eprint("logged out");
    Ok(())
}

pub(super) async fn whoami(cfg_path: &Path, format: Format, verbose: bool) -> anyhow::Result<()> {
    let (client, org) = context::client(cfg_path, verbose).await?;
    let mut me = client.api("GET", "/auth/whoami", None, &[]).await?;
    // The organization commands act on (the context's), beside who you are.
    me["org"] = serde_json::json!(org);
    print(
        format,
        &me,
        "",
        &[
            ("KIND", "kind"),
            ("NAME", "name"),
            ("ORG", "org"),
            ("ADMIN", "admin"),
        ],
    )
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SessionCommand {
    /// List your live sessions: where each came from (a password or a credential), when it was
    /// last refreshed and used, and which one this client uses.
    #[command(after_help = "Example:\n  berth session list")]
    #[command(visible_alias = "ls")]
    List,
    /// End a session (its refresh tokens and access tokens stop working within seconds), or all
    /// of them with --all.
    #[command(
        after_help = "Example:\n  berth session revoke 3f1c0c8e-7a35-4b39-9d8e-0f5a1b2c3d4e\n  berth session revoke --all"
    )]
    Revoke {
        /// The session id from `berth session list`.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        id: Option<String>,
        /// End every one of your sessions, this one included.
        #[arg(long)]
        all: bool,
    },
}

pub(super) async fn session(
    cmd: &SessionCommand,
    cfg_path: &Path,
    format: Format,
    verbose: bool,
) -> anyhow::Result<()> {
    let (client, _) = context::client(cfg_path, verbose).await?;
    match cmd {
        SessionCommand::List => {
            let mut v = client.api("GET", "/sessions", None, &[]).await?;
            if let Some(list) = v["sessions"].as_array_mut() {
                for s in list {
                    s["from"] = s["source"]["kind"].clone();
                    s["lastUsedAt"] = s["lastUsed"]["at"].clone();
                    s["address"] = s["lastUsed"]["address"].clone();
                    s["client"] = s["lastUsed"]["userAgent"].clone();
                }
            }
            print(
                format,
                &v,
                "sessions",
                &[
                    ("ID", "id"),
                    ("FROM", "from"),
                    ("REFRESHED", "refreshed"),
                    ("EXPIRES", "expires"),
                    ("LAST USED", "lastUsedAt"),
                    ("ADDRESS", "address"),
                    ("CLIENT", "client"),
                    ("CURRENT", "current"),
                ],
            )
        }
        SessionCommand::Revoke { id, all } => {
            let path = match (id, all) {
                (_, true) => "/sessions".to_owned(),
                (Some(id), false) => format!("/sessions/{id}"),
                (None, false) => return Err(Usage("give a session id or --all".into()).into()),
            };
            client.api("DELETE", &path, None, &[]).await?;
            if *all {
                // This client's own session ended too: forget its tokens (the context stays, so
                // a bare `berth login` signs in to it again).
                let mut cfg = ClientConfig::load(cfg_path)?;
                let cred_name = cfg.current()?.0.context.credential.clone();
                if let Some(c) = cfg.credentials.iter_mut().find(|c| c.name == cred_name) {
                    c.credential.refresh_token = None;
                    c.credential.access_token = None;
                    c.credential.access_token_expires = None;
                }
                cfg.save(cfg_path)?;
            }
            eprintln!(
                "{}",
                if *all {
                    "all sessions ended"
                } else {
                    "session ended"
                }
            );
            Ok(())
        }
    }
}
