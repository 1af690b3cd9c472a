//! Command-line front ends of the library, one module per subcommand. They print for people
//! (tables) or machines (`--json`) and return the exit code.

pub mod audit;
pub mod ca;
pub mod credentials;
pub mod operator;
pub mod policy;
pub mod workloads;

use std::{path::Path, process::ExitCode};

/// `fhirwall uninstall`.
pub fn uninstall(pin_dir: &Path) -> anyhow::Result<ExitCode> {
    let removed = crate::kernel::uninstall(pin_dir)?;
    println!(
        "removed {removed} pinned programs and maps from {}",
        pin_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}
