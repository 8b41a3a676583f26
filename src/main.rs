//! The `berth` binary: parse the command line and run it.

use std::process::ExitCode;

use clap::Parser as _;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    // Installed (or linked) as `docker-credential-berth`, the binary is docker's credential helper.
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let invoked_as = std::path::Path::new(&argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    if invoked_as == "docker-credential-berth" {
        let action = std::env::args().nth(1).unwrap_or_default();
        return berth::cli::docker::credential_helper(&action);
    }
    let cli = berth::cli::Cli::parse();
    match berth::cli::run(cli) {
        Ok(code) => code,
        Err(e) if berth::cli::is_quiet(&e) => berth::cli::exit_code(&e),
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(hint) = berth::cli::hint(&e) {
                eprintln!("hint: {hint}");
            }
            berth::cli::exit_code(&e)
        }
    }
}
