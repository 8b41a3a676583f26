//! `berth keys rotate`: adds a token signing key in the data directory (or, with
//! `BERTH_DATABASE_URL`, in the database every node reads). A running server picks it up within
//! a second and signs with it; older keys keep verifying until tokens they signed have
//! expired, then a later rotation removes them.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::auth::keys::Keys;
use crate::config::{Config, ServeArgs, env};

#[derive(Debug, Clone, clap::Args)]
pub struct KeysArgs {
    #[command(subcommand)]
    pub command: KeysCommand,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Add a new signing key; keys superseded longer ago than the token lifetime are removed.
    #[command(after_help = "Example:\n  berth keys rotate --data-dir /var/lib/berth")]
    Rotate {
        /// The server's TOML configuration file (for data_dir and token_ttl).
        config: Option<PathBuf>,
        /// Data directory of the registry [default: ./berth-data]
        #[arg(long, env = env::BERTH_DATA_DIR, value_name = "DIR")]
        data_dir: Option<PathBuf>,
        /// The server's operator-provided signing key, if any (then rotation is refused).
        #[arg(long, env = env::BERTH_TOKEN_KEY, value_name = "FILE")]
        token_key: Option<PathBuf>,
        /// The chain of --token-key.
        #[arg(long, env = env::BERTH_TOKEN_CERT_CHAIN, value_name = "FILE")]
        token_cert_chain: Option<PathBuf>,
    },
}

pub(super) fn run(args: &KeysArgs) -> anyhow::Result<ExitCode> {
    match &args.command {
        KeysCommand::Rotate {
            config,
            data_dir,
            token_key,
            token_cert_chain,
        } => {
            let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
            let config = Config::load(&ServeArgs {
                config: config.clone(),
                data_dir: data_dir.clone(),
                token_key: token_key.clone(),
                token_cert_chain: token_cert_chain.clone(),
                database: var(env::BERTH_DATABASE_URL),
                secret_key_file: var(env::BERTH_SECRET_KEY_FILE).map(PathBuf::from),
                token_ttl: var(env::BERTH_TOKEN_TTL),
                ..ServeArgs::default()
            })?;
            if config.token_signer.is_some() {
                anyhow::bail!(
                    "the token signing key is operator-provided (token_key); replace its files to rotate it"
                );
            }
            let keys = match &config.database {
                // Every node reads the new key from the database within a second.
                Some(_) => {
                    let content = crate::state::open_content(
                        &config.data_dir,
                        config.database.as_ref(),
                        None,
                    )
                    .context("opening the metadata database")?;
                    crate::state::open_keys(&config, &content)?
                }
                None => Keys::open(&config.data_dir)
                    .with_context(|| format!("opening keys in {}", config.data_dir.display()))?,
            };
            // Tokens live at most token_ttl; verifiers allow some clock leeway on top.
            let keep = config.token_ttl + std::time::Duration::from_secs(60);
            let kid = keys.rotate(keep)?;
            crate::cli_print(&format!("new signing key {kid}"));
            Ok(ExitCode::SUCCESS)
        }
    }
}
