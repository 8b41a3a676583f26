//! The kubeconfig-shaped client configuration (`apiVersion: berth/v1`, `kind: Config`): servers,
//! credentials and contexts (server + credential + org) with a current one, as plain data with
//! its pure edits, and the self-contained config of a robot. Reading, writing and using it is
//! `cli/context`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct ClientConfig {
    #[serde(default = "api_version")]
    pub(crate) api_version: String,
    #[serde(default = "kind")]
    pub(crate) kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) current_context: Option<String>,
    #[serde(default)]
    pub(crate) servers: Vec<NamedServer>,
    #[serde(default)]
    pub(crate) credentials: Vec<NamedCredential>,
    #[serde(default)]
    pub(crate) contexts: Vec<NamedContext>,
}

fn api_version() -> String {
    "berth/v1".into()
}

fn kind() -> String {
    "Config".into()
}

impl Default for ClientConfig {
    fn default() -> Self {
        ClientConfig {
            api_version: api_version(),
            kind: kind(),
            current_context: None,
            servers: Vec::new(),
            credentials: Vec::new(),
            contexts: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NamedServer {
    pub(crate) name: String,
    pub(crate) server: Server,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Server {
    pub(crate) url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) certificate_authority_data: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub(crate) insecure_skip_tls_verify: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NamedCredential {
    pub(crate) name: String,
    pub(crate) credential: Credential,
}

/// One of: a user's refresh token, a robot token, an API key.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub(crate) struct Credential {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) robot_token: Option<RobotToken>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) api_key: Option<String>,
    /// A registry token (login user name `token`), as `docker login -u token` stores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) registry_token: Option<String>,
    /// A short-lived access token got with the refresh token, and when it expires (Unix time).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) access_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) access_token_expires: Option<i64>,
    /// A workload acting as a robot with its platform's token (`berth login
    /// --federated-token-file`): sent as Basic `ORG/ROBOT` + token, exchanged by the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) workload: Option<WorkloadCredential>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct WorkloadCredential {
    pub(crate) robot: String,
    pub(crate) token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RobotToken {
    pub(crate) access_id: String,
    pub(crate) token: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct NamedContext {
    pub(crate) name: String,
    pub(crate) context: Context,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Context {
    pub(crate) server: String,
    pub(crate) credential: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) org: Option<String>,
}

impl ClientConfig {
    pub(crate) fn upsert_server(&mut self, name: &str, server: Server) {
        self.servers.retain(|s| s.name != name);
        self.servers.push(NamedServer {
            name: name.to_owned(),
            server,
        });
    }

    pub(crate) fn upsert_credential(&mut self, name: &str, credential: Credential) {
        self.credentials.retain(|c| c.name != name);
        self.credentials.push(NamedCredential {
            name: name.to_owned(),
            credential,
        });
    }

    pub(crate) fn upsert_context(&mut self, name: &str, context: Context) {
        self.contexts.retain(|c| c.name != name);
        self.contexts.push(NamedContext {
            name: name.to_owned(),
            context,
        });
    }
}

impl Server {
    /// `host[:port]` of the URL, as registries name themselves in docker configs.
    pub(crate) fn host(&self) -> String {
        self.url
            .split("://")
            .nth(1)
            .unwrap_or(&self.url)
            .trim_end_matches('/')
            .to_owned()
    }
}

/// A self-contained client config for an automation that logs in with a robot token or API key
/// (`berth config create --from-token`, the console's robot config). `Err`: what is wrong.
pub(crate) fn robot_config(
    server_url: &str,
    ca_data: Option<String>,
    access_id: &str,
    token: &str,
    org: Option<String>,
) -> Result<ClientConfig, String> {
    if !server_url.starts_with("http://") && !server_url.starts_with("https://") {
        return Err(format!(
            "--server {server_url:?} must start with https:// or http://"
        ));
    }
    let server = Server {
        url: server_url.trim_end_matches('/').to_owned(),
        certificate_authority_data: ca_data,
        insecure_skip_tls_verify: false,
    };
    let host = server.host();
    let credential = match access_id {
        "iamapikey" => Credential {
            api_key: Some(token.to_owned()),
            ..Credential::default()
        },
        "token" => {
            return Err(
                "a registry token is for registry clients; use a robot token or API key".into(),
            );
        }
        _ => Credential {
            robot_token: Some(RobotToken {
                access_id: access_id.to_owned(),
                token: token.to_owned(),
            }),
            ..Credential::default()
        },
    };
    let mut cfg = ClientConfig::default();
    let cred_name = format!("robot-{}", &access_id[..access_id.len().min(8)]);
    cfg.upsert_server(&host, server);
    cfg.upsert_credential(&cred_name, credential);
    cfg.upsert_context(
        "default",
        Context {
            server: host,
            credential: cred_name,
            org,
        },
    );
    cfg.current_context = Some("default".into());
    Ok(cfg)
}
