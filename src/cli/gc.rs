//! `berth gc`: garbage collection against the data directory, beside a running server or not.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::{Config, ServeArgs, env, parse_duration};
use crate::content::gc::Options;

#[derive(Debug, Clone, clap::Args)]
pub struct GcArgs {
    /// The server's TOML configuration file (for data_dir and upload_ttl).
    pub config: Option<PathBuf>,
    /// Data directory of the registry [default: ./berth-data]
    #[arg(long, env = env::BERTH_DATA_DIR, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Report what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Also remove manifests that no tag, index or present subject keeps.
    #[arg(long)]
    pub untagged: bool,
    /// Keep blob links and manifests younger than this [default: the configured gc_grace, 1h]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub grace: Option<std::time::Duration>,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

pub(super) fn run(args: &GcArgs) -> anyhow::Result<ExitCode> {
    // The server's settings that matter here, from the same places the server reads them
    // (its environment variables beat its file).
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let config = Config::load(&ServeArgs {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        upload_ttl: var(env::BERTH_UPLOAD_TTL),
        gc_grace: var(env::BERTH_GC_GRACE),
        database: var(env::BERTH_DATABASE_URL),
        storage: var(env::BERTH_STORAGE),
        s3_endpoint: var(env::BERTH_S3_ENDPOINT),
        s3_region: var(env::BERTH_S3_REGION),
        s3_path_style: var(env::BERTH_S3_PATH_STYLE).map(|v| v == "true" || v == "1"),
        ..ServeArgs::default()
    })?;
    if config.database.is_none() && !config.data_dir.join("berth.db").is_file() {
        anyhow::bail!(
            "no berth data in {} (give --data-dir)",
            config.data_dir.display()
        );
    }
    let content = crate::state::open_content(
        &config.data_dir,
        config.database.as_ref(),
        config.storage.as_ref(),
    )
    .with_context(|| format!("opening the data directory {}", config.data_dir.display()))?;
    let opts = Options {
        grace: args.grace.unwrap_or(config.gc_grace),
        upload_ttl: config.upload_ttl,
        untagged: args.untagged,
        dry_run: args.dry_run,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let report = runtime.block_on(content.collect_garbage(opts))?;
    let text = if args.json {
        serde_json::to_string_pretty(&report)?
    } else {
        report.to_string()
    };
    crate::cli_print(&text);
    Ok(ExitCode::SUCCESS)
}
