//! `fhirwall`: the agent and its command line. Everything here parses arguments and hands over;
//! the work happens in the library (`app::run` for the agent itself).

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};
use fhirwall::{cli, config::AgentConfig};

#[derive(Parser)]
#[command(
    name = "fhirwall",
    version,
    about = "Named, purpose-bound identities for FHIR API integrations, enforced per request"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: kernel programs, sidecar and admin API.
    Run {
        /// Agent configuration (YAML); built-in defaults when absent.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Validate and explain policies.
    #[command(subcommand)]
    Policy(cli::policy::PolicyCommand),
    /// Query, report on, verify and export the audit trail.
    Audit(Box<cli::audit::AuditArgs>),
    /// Create or export the node CA the sidecar mints its TLS certificates from.
    #[command(subcommand)]
    Ca(cli::ca::CaCommand),
    /// Signing keys of brokered integrations (SMART Backend Services) and their JWKS.
    #[command(subcommand)]
    Credentials(cli::credentials::CredentialsCommand),
    /// Revoke an integration now: its requests are denied, its processes' connects refused in
    /// the kernel, and its brokered token dropped and revoked at the authorization server, until
    /// `reinstate` (survives reloads and restarts).
    Revoke(cli::operator::RevokeArgs),
    /// Undo an operator revocation.
    Reinstate(cli::operator::ReinstateArgs),
    /// Emergency access sessions (alerted and audited).
    #[command(subcommand, name = "break-glass")]
    BreakGlass(cli::operator::BreakGlassCommand),
    /// Live connections attributed to their workloads (asks the running agent).
    Workloads(cli::workloads::WorkloadsArgs),
    /// Detach and unpin every kernel program and map fhirwall installed.
    Uninstall {
        /// bpffs directory of the pins.
        #[arg(long, default_value = "/sys/fs/bpf/fhirwall")]
        pin_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    // Audit files, exports and keys hold patient references and secrets: whatever this process
    // creates is its user's alone, whatever umask the service manager or shell left.
    fhirwall::private_files::restrict_umask();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run { config } => run(config),
        Command::Policy(command) => cli::policy::run(&command),
        // Exit 1 is reserved for a verdict ("tampered"); errors exit 2.
        Command::Audit(args) => {
            return cli::audit::run(*args).unwrap_or_else(|e| {
                eprintln!("fhirwall: {e:#}");
                ExitCode::from(2)
            });
        }
        Command::Ca(command) => cli::ca::run(&command),
        Command::Credentials(command) => cli::credentials::run(&command),
        Command::Workloads(args) => cli::workloads::run(&args),
        Command::Revoke(args) => cli::operator::revoke(&args),
        Command::Reinstate(args) => cli::operator::reinstate(&args),
        Command::BreakGlass(command) => cli::operator::break_glass(&command),
        Command::Uninstall { pin_dir } => cli::uninstall(&pin_dir),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("fhirwall: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(config: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    // Logs go to stderr (journald / container logs). They never carry PHI: request values,
    // bodies and command lines are kept out of every log line by the modules that see them.
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let config = match config {
        Some(path) => AgentConfig::load(&path)?,
        None => AgentConfig::default(),
    };
    fhirwall::app::run(&config)?;
    Ok(ExitCode::SUCCESS)
}
