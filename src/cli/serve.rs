//! `berth serve`: resolve the configuration, open the stores, bind, serve until SIGTERM/SIGINT.

use std::process::ExitCode;

use anyhow::Context as _;

use crate::config::{Config, ServeArgs};
use crate::server::{self, AppState};

pub(super) fn run(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(args)?;
    crate::telemetry::init(&config.log);
    // The stores are opened before the runtime starts: their clients block (SQLite, and
    // PostgreSQL's synchronous client, which must not run on a runtime's thread).
    let state = AppState::open(&config).with_context(|| match &config.database {
        Some(_) => "opening the metadata database".to_owned(),
        None => format!("opening the data directory {}", config.data_dir.display()),
    })?;
    bootstrap_admin(&state)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(serve(config, state))?;
    Ok(ExitCode::SUCCESS)
}

async fn serve(config: Config, state: AppState) -> anyhow::Result<()> {
    let tls = config.tls.as_ref().map(server::tls_acceptor).transpose()?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr().context("reading the bound address")?;
    server::spawn_background(&state, &config).context("starting the revocation reader thread")?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    // Tests and scripts read this line to learn the port when --listen ends in :0.
    tracing::info!(metadata = %state.content.meta().describe(), blobs = %state.content.blobs().describe(), data_dir = %config.data_dir.display(), "berth listening on {scheme}://{addr}");
    server::serve(listener, state, tls, shutdown_signal())
        .await
        .context("serving")?;
    tracing::info!("berth stopped");
    Ok(())
}

/// On an empty store, creates the server admin `admin` with `BERTH_ADMIN_PASSWORD`, or with a
/// random password printed once to stderr (never to the log).
fn bootstrap_admin(state: &AppState) -> anyhow::Result<()> {
    let given = std::env::var(crate::config::env::BERTH_ADMIN_PASSWORD).ok();
    let generated = state
        .auth()
        .iam()
        .bootstrap_admin(given.as_deref())
        .context("creating the server admin")?;
    if let Some(password) = generated {
        crate::cli_eprint(&format!(
            "berth: created the server admin \"admin\" with password {password}\n\
             berth: this is shown once; set BERTH_ADMIN_PASSWORD on first start to choose it"
        ));
    }
    Ok(())
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing in-flight requests");
}
