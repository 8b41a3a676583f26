//! `berth credential-provider`: the kubelet's image credential provider
//! (`credentialprovider.kubelet.k8s.io/v1`), built into the binary. The kubelet writes a
//! `CredentialProviderRequest` on stdin and reads a `CredentialProviderResponse` from stdout;
//! a failure is a non-zero exit with one line on stderr.
//!
//! With KEP-4412 (`serviceAccountToken` in the request) the answer is the robot's full name and
//! the pod's service-account token: the registry exchanges it at `/token` against the robot's
//! trusts, so no secret lives on the node. Without it, `--token-file` answers a robot token or
//! API key kept on the node. `config` prints the `CredentialProviderConfig` to install.

use std::io::Read as _;
use std::path::PathBuf;

use serde_json::Value;

use super::errors::Usage;

use crate::kube::provider::{API as REQUEST_API, ROBOT_ANNOTATION};
/// Largest request read from the kubelet.
const MAX_REQUEST: u64 = 1024 * 1024;

#[derive(Debug, Clone, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct ProviderArgs {
    /// The registry host (and port) this provider answers for; images of other hosts are refused
    /// [default: any host the kubelet sends].
    #[arg(long, value_name = "HOST")]
    pub registry: Option<String>,
    /// The robot (ORG/NAME) to act as when the service account has no berth.dev/robot annotation.
    #[arg(long, value_name = "ORG/ROBOT")]
    pub robot: Option<String>,
    /// Without service-account tokens: a robot token file ({"accessId","token"}) or an API key
    /// file on the node, answered as is.
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Option<ProviderCommand>,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ProviderCommand {
    /// Print the kubelet's CredentialProviderConfig for this provider.
    #[command(
        after_help = "Example:\n  berth credential-provider config --match-image 'registry.example.com/*' --audience berth \\\n    > /etc/kubernetes/credential-provider.yaml\n  # kubelet --image-credential-provider-config=/etc/kubernetes/credential-provider.yaml \\\n  #   --image-credential-provider-bin-dir=/usr/local/bin"
    )]
    Config {
        /// The images the kubelet asks this provider about: a host with an optional port and
        /// path prefix; globs in the host only (*.example.com). A trailing /* means every path.
        #[arg(long, value_name = "PATTERN")]
        match_image: Vec<String>,
        /// The robot (ORG/NAME) for pods whose service account has no berth.dev/robot annotation;
        /// without it the annotation is required.
        #[arg(long, value_name = "ORG/ROBOT")]
        robot: Option<String>,
        /// The audience of the service-account tokens the kubelet requests (the robot's trust
        /// must name it, or the registry's service name when the trust names none).
        #[arg(long, value_name = "AUD", default_value = "berth")]
        audience: String,
        /// The provider's executable name in the kubelet's bin directory.
        #[arg(long, default_value = "berth")]
        name: String,
    },
}

/// The host of an image reference (Docker's rule: the first component is a host when it has a
/// dot or a port, or is `localhost`).
fn image_host(image: &str) -> String {
    let first = image.split('/').next().unwrap_or_default();
    if image.contains('/') && (first.contains('.') || first.contains(':') || first == "localhost") {
        first.to_ascii_lowercase()
    } else {
        "docker.io".into()
    }
}

fn fail(m: impl Into<String>) -> anyhow::Error {
    Usage(m.into()).into()
}

/// Answers one kubelet request from stdin.
pub fn run(args: &ProviderArgs) -> anyhow::Result<()> {
    if let Some(ProviderCommand::Config {
        match_image,
        robot,
        audience,
        name,
    }) = &args.command
    {
        let config = crate::kube::provider::config(match_image, robot.as_deref(), audience, name)
            .map_err(fail)?;
        crate::cli_print(
            serde_norway::to_string(&config)
                .map_err(|e| anyhow::anyhow!(e.to_string()))?
                .trim_end(),
        );
        return Ok(());
    }
    let mut text = String::new();
    std::io::stdin()
        .take(MAX_REQUEST)
        .read_to_string(&mut text)
        .map_err(|e| fail(format!("reading the request: {e}")))?;
    let resp = answer(&text, args, crate::store::now())?;
    crate::cli_print(&resp.to_string());
    Ok(())
}

/// The `CredentialProviderResponse` to one request's text, at `now` (Unix seconds).
pub fn answer(text: &str, args: &ProviderArgs, now: i64) -> anyhow::Result<Value> {
    let req: Value =
        serde_json::from_str(text).map_err(|e| fail(format!("the request is not JSON: {e}")))?;
    let api = req["apiVersion"].as_str().unwrap_or_default();
    if api != REQUEST_API || req["kind"] != "CredentialProviderRequest" {
        return Err(fail(format!(
            "expected a CredentialProviderRequest of {REQUEST_API}, got kind {} of {api:?}",
            req["kind"]
        )));
    }
    let image = req["image"]
        .as_str()
        .filter(|i| !i.is_empty())
        .ok_or_else(|| fail("the request names no image"))?;
    let host = image_host(image);
    if let Some(registry) = &args.registry
        && !registry.eq_ignore_ascii_case(&host)
    {
        return Err(fail(format!(
            "image {image:?} is not on registry {registry:?}"
        )));
    }
    let sa_token = req["serviceAccountToken"]
        .as_str()
        .filter(|t| !t.is_empty());
    let (username, password, cache_secs) = match (sa_token, &args.token_file) {
        (Some(token), _) => {
            let robot = req["serviceAccountAnnotations"][ROBOT_ANNOTATION]
                .as_str()
                .map(str::to_owned)
                .or_else(|| args.robot.clone())
                .ok_or_else(|| {
                    fail(format!(
                        "no robot for this pod: annotate its service account with {ROBOT_ANNOTATION}: ORG/ROBOT, or pass --robot"
                    ))
                })?;
            if !robot.contains('/') {
                return Err(fail(format!("robot {robot:?} must be ORG/ROBOT")));
            }
            let exp = crate::auth::workload::unverified_claims(token)
                .and_then(|c| c["exp"].as_i64())
                .ok_or_else(|| fail("the service-account token is not a JWT with exp"))?;
            let left = exp.saturating_sub(now);
            if left <= 0 {
                return Err(fail("the service-account token has expired"));
            }
            (robot, token.to_owned(), left)
        }
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| fail(format!("reading {}: {e}", path.display())))?;
            let (user, secret) = credential_of(text.trim()).ok_or_else(|| {
                fail(format!(
                    "{} holds no robot token or API key",
                    path.display()
                ))
            })?;
            (user, secret, 600)
        }
        (None, None) => {
            return Err(fail(
                "the request carries no service-account token (set tokenAttributes in the kubelet's provider config) and no --token-file was given",
            ));
        }
    };
    Ok(crate::kube::provider::response(
        &host, &username, &password, cache_secs,
    ))
}

/// A robot token file (`{"accessId", "token"}`), an API key file (`{"apikey"}`), a registry
/// token file (`{"token"}`), or a bare API key or registry token: (user name, secret).
fn credential_of(text: &str) -> Option<(String, String)> {
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        // A robot token file, an API key file ({"name","apikey"}) or a registry token file.
        return match (
            v["accessId"].as_str(),
            v["token"].as_str(),
            v["apikey"].as_str(),
        ) {
            (Some(id), Some(t), _) => Some((id.to_owned(), t.to_owned())),
            (None, _, Some(k)) => Some(("iamapikey".into(), k.to_owned())),
            (None, Some(t), None) => Some(("token".into(), t.to_owned())),
            _ => None,
        };
    }
    let secret = crate::iam::Secret::parse(text)?;
    match secret.kind() {
        crate::iam::SecretKind::ApiKey => Some(("iamapikey".into(), text.to_owned())),
        crate::iam::SecretKind::RegistryToken => Some(("token".into(), text.to_owned())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_files_of_every_kind() {
        let robot = r#"{"accessId": "0f6e", "token": "bthr_x"}"#;
        assert_eq!(
            super::credential_of(robot),
            Some(("0f6e".into(), "bthr_x".into()))
        );
        let key = r#"{"name": "k", "apikey": "btha_y"}"#;
        assert_eq!(
            super::credential_of(key),
            Some(("iamapikey".into(), "btha_y".into()))
        );
        let registry = r#"{"token": "btht_z", "id": "1"}"#;
        assert_eq!(
            super::credential_of(registry),
            Some(("token".into(), "btht_z".into()))
        );
        assert_eq!(super::credential_of("{}"), None);
        assert_eq!(super::credential_of("not a secret"), None);
    }

    #[test]
    fn image_hosts_follow_docker_rules() {
        assert_eq!(
            super::image_host("registry.example.com/acme/app:v1"),
            "registry.example.com"
        );
        assert_eq!(
            super::image_host("127.0.0.1:5000/acme/app"),
            "127.0.0.1:5000"
        );
        assert_eq!(super::image_host("localhost/app"), "localhost");
        assert_eq!(super::image_host("acme/app"), "docker.io");
        assert_eq!(super::image_host("nginx"), "docker.io");
    }
}
