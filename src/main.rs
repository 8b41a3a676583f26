//! The `berth` binary: parse the command line and run it.

use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
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
