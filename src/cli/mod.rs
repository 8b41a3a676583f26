//! The command line: clap definitions and one file per command. Every command but `serve` and
//! `gc` will be a client of the management API (a later issue).

mod gc;
mod keys;
mod serve;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub use crate::config::ServeArgs;
pub use gc::GcArgs;
pub use keys::KeysArgs;

/// berth: a private OCI registry whose centre is machine identity.
#[derive(Debug, Parser)]
#[command(name = "berth", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the registry server (SQLite and a blob directory in --data-dir by default).
    Serve(Box<ServeArgs>),
    /// Remove blobs, uploads and (with --untagged) manifests that nothing references.
    /// Safe to run while the server is running.
    Gc(GcArgs),
    /// Manage the token signing keys.
    Keys(KeysArgs),
}

/// Exit codes: 0 success, 2 usage (clap), 1 any other failure.
pub fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve(args) => serve::run(&args),
        Command::Gc(args) => gc::run(&args),
        Command::Keys(args) => keys::run(&args),
    }
}
