//! `fhirwall`: the agent and its command line.
//!
//! Minimal wiring of the `audit` subcommand; the rest of the command line lands with `app`.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "fhirwall",
    version,
    about = "Per-node enforcement agent for FHIR APIs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Query, report on, verify and export the audit trail.
    Audit(fhirwall::cli::audit::AuditArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let result = match Cli::parse().command {
        Command::Audit(args) => fhirwall::cli::audit::run(args).map_err(anyhow::Error::from),
    };
    // Exit 1 is reserved for a verdict ("tampered"); errors exit 2.
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::from(2)
    })
}
