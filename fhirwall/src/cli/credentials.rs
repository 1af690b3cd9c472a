//! `fhirwall credentials keygen | import | jwks`: the signing keys of brokered integrations,
//! and the public keys to register with the authorization server.

use std::{fmt::Write as _, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use clap::{Args, Subcommand};
use jiff::{SignedDuration, Timestamp};
use serde_json::{Map, Value};

use crate::broker::keys::{self, KeyStore, StoredKey};

#[derive(Subcommand)]
pub enum CredentialsCommand {
    /// Create an integration's signing key (ECDSA P-384, for ES384) and print its public JWK.
    /// With a key already in place this is a rotation: the new key signs after the overlap,
    /// and both are in the JWKS until then.
    Keygen(KeygenArgs),
    /// Add an existing private key (PEM: P-384 EC in PKCS#8, or RSA in PKCS#1 for RS384), with
    /// the same overlap rules as `keygen`.
    Import(ImportArgs),
    /// Print the JWKS to register with the authorization server: the key in use and any key
    /// waiting to replace it. One integration's, or all of them by name.
    Jwks(JwksArgs),
}

#[derive(Args)]
pub struct StoreArgs {
    /// The agent's configuration: its state directory holds the keys (`<state_dir>/keys`).
    #[arg(long, default_value = "/etc/fhirwall/agent.yaml")]
    pub config: PathBuf,
    /// The key store directory, instead of the configuration's.
    #[arg(long)]
    pub keys_dir: Option<PathBuf>,
}

impl StoreArgs {
    fn store(&self) -> anyhow::Result<KeyStore> {
        if let Some(dir) = &self.keys_dir {
            return Ok(KeyStore::new(dir));
        }
        let config = crate::config::AgentConfig::load(&self.config)?;
        Ok(KeyStore::new(crate::app::keys_dir(&config)))
    }
}

#[derive(Args)]
pub struct KeygenArgs {
    /// The integration (as named in the policy).
    #[arg(long)]
    pub integration: String,
    #[command(flatten)]
    pub store: StoreArgs,
    /// When a key is in place: how long the authorization server is given to learn the new
    /// one before it signs (e.g. `24h`, `30m`).
    #[arg(long, default_value = "24h")]
    pub overlap: SignedDuration,
    /// Sign with the new key at once and drop the old one from the JWKS (a compromised key).
    /// Requests fail until the server has the new key.
    #[arg(long)]
    pub now: bool,
}

#[derive(Args)]
pub struct ImportArgs {
    #[command(flatten)]
    pub keygen: KeygenArgs,
    /// The private key file (PEM).
    #[arg(long)]
    pub key: PathBuf,
}

#[derive(Args)]
pub struct JwksArgs {
    /// Only this integration's JWKS (what its client registration takes).
    #[arg(long)]
    pub integration: Option<String>,
    #[command(flatten)]
    pub store: StoreArgs,
}

pub fn run(command: &CredentialsCommand) -> anyhow::Result<ExitCode> {
    match command {
        CredentialsCommand::Keygen(args) => add(args, None)?,
        CredentialsCommand::Import(args) => {
            let pem = std::fs::read(&args.key)
                .with_context(|| format!("reading {}", args.key.display()))?;
            add(&args.keygen, Some(&pem))?;
        }
        CredentialsCommand::Jwks(args) => println!("{}", jwks(args)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Stores a new key (generated, or `pem`), prunes the keys it replaced, prints its JWK.
fn add(args: &KeygenArgs, pem: Option<&[u8]>) -> anyhow::Result<()> {
    let store = args.store.store()?;
    let now = Timestamp::now();
    let first = store.keys(&args.integration)?.is_empty();
    let not_before = if first || args.now {
        now
    } else {
        now.checked_add(args.overlap)
            .context("the overlap is too long")?
    };
    let key = match pem {
        Some(pem) => store.store(&args.integration, pem, not_before)?,
        None => store.generate(&args.integration, not_before)?,
    };
    let pruned = store.prune(&args.integration, now)?;
    println!("{}", serde_json::to_string_pretty(&key.public)?);
    eprintln!("{}", advice(&args.integration, &key, first, &pruned));
    Ok(())
}

fn advice(integration: &str, key: &StoredKey, first: bool, pruned: &[String]) -> String {
    let mut text = format!(
        "{} key {} of {integration} in {}",
        key.algorithm.as_str(),
        key.kid,
        key.path.display()
    );
    if first {
        let _ = write!(
            text,
            "\nregister the JWKS (`fhirwall credentials jwks --integration {integration}`) with \
             the authorization server as this client's keys"
        );
    } else {
        let _ = write!(
            text,
            "\nit signs from {}; register the JWKS again before then (both keys are in it)",
            key.not_before
        );
    }
    for kid in pruned {
        let _ = write!(text, "\nremoved replaced key {kid}");
    }
    text
}

fn jwks(args: &JwksArgs) -> anyhow::Result<String> {
    let store = args.store.store()?;
    let now = Timestamp::now();
    if let Some(name) = &args.integration {
        let published = store.published(name, now)?;
        anyhow::ensure!(
            !published.is_empty(),
            "integration `{name}` has no keys (`fhirwall credentials keygen --integration {name}`)"
        );
        return Ok(serde_json::to_string_pretty(&keys::jwks(&published))?);
    }
    let mut all = Map::new();
    for name in store.integrations()? {
        let published = store.published(&name, now)?;
        all.insert(name, keys::jwks(&published));
    }
    Ok(serde_json::to_string_pretty(&Value::Object(all))?)
}
