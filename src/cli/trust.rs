//! `berth robot trust`: which workloads' tokens (an OpenID issuer's) may act as a robot.

use serde_json::json;

use super::common::{TRUST_COLUMNS, done};
use super::output::{Format, print};

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
    #[command(visible_alias = "ls")]
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

/// `ROBOT` or `ORG/ROBOT`: the organization and the robot.
fn robot_ref<'a>(org: &'a str, robot: &'a str) -> (&'a str, &'a str) {
    robot.split_once('/').unwrap_or((org, robot))
}

/// `robot trust …` on robots of `org`.
pub(super) async fn run(
    cmd: &TrustCommand,
    c: &crate::client::Client,
    org: &str,
    format: Format,
) -> anyhow::Result<()> {
    match cmd {
        TrustCommand::Add {
            robot,
            name,
            issuer,
            subject,
            audience,
            claims,
            jwks_file,
        } => {
            let (org, robot) = robot_ref(org, robot);
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
        TrustCommand::List { robot } => {
            let (org, robot) = robot_ref(org, robot);
            let mut v = c
                .api(
                    "GET",
                    &format!("/orgs/{org}/robots/{robot}/trusts"),
                    None,
                    &[],
                )
                .await?;
            // No audience given: the token must name the registry's service name.
            if format == Format::Table
                && let Some(list) = v["trusts"].as_array_mut()
            {
                for t in list.iter_mut().filter(|t| t["audience"].is_null()) {
                    t["audience"] = json!("(service name)");
                }
            }
            print(format, &v, "trusts", &TRUST_COLUMNS)
        }
        TrustCommand::Delete { robot, name } => {
            let (org, robot) = robot_ref(org, robot);
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
    }
}
