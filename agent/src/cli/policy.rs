//! `fhirwall policy check DIR`.

use std::{path::PathBuf, process::ExitCode};

use clap::Subcommand;

use crate::policy::{LoadError, Policy};

#[derive(Subcommand)]
pub enum PolicyCommand {
    /// Validate a policy directory: exit 0 when valid, 1 with every problem as file:line.
    Check { dir: PathBuf },
}

pub fn run(command: &PolicyCommand) -> anyhow::Result<ExitCode> {
    match command {
        PolicyCommand::Check { dir } => check(dir),
    }
}

fn check(dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    match Policy::load(dir) {
        Ok(policy) => {
            println!(
                "{}: ok ({} upstreams, {} integrations)",
                dir.display(),
                policy.upstreams.len(),
                policy.integrations.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(LoadError::Invalid { problems }) => {
            for problem in &problems {
                eprintln!("{problem}");
            }
            eprintln!("{}: {} problem(s)", dir.display(), problems.len());
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}
