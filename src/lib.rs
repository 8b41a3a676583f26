//! berth: a private OCI container registry in one binary.
//!
//! Crate map (see ARCHITECTURE.md for the request path and the invariants):
//! * `cli`, `config`, `telemetry`: the binary's edge: flags, settings, logging.
//! * `server`: state, accept loop, shutdown, background tasks.
//! * `http`: the router; `http::oci` is the OCI Distribution API.
//! * `content`: OCI content rules over the two stores.
//! * `store` (metadata, SQLite) and `blob` (bytes, filesystem): the two seams.

pub mod auth;
pub mod blob;
pub mod cli;
pub mod client;
pub mod config;
pub mod content;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod iam;
pub mod kube;
pub mod metrics;
pub mod policy;
pub mod server;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod types;

/// Writes a message for a person to stderr (outside the log, so log shippers never see it).
#[allow(clippy::print_stderr)]
pub(crate) fn cli_eprint(text: &str) {
    eprintln!("{text}");
}

/// Writes a command's result to stdout: the one place the CLI prints data. A reader that went
/// away (`berth audit list | head -1`) ends the command quietly with status 0, as other tools do,
/// never with a panic.
pub(crate) fn cli_print(text: &str) {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    let written = writeln!(out, "{text}").and_then(|()| out.flush());
    if let Err(e) = written {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("error: writing to standard output: {e}");
        std::process::exit(1);
    }
}
