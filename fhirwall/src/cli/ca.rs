//! `fhirwall ca init`, `fhirwall ca rotate` and `fhirwall ca export`: create the node-local CA
//! the sidecar mints leaf certificates from, replace it with an overlap, and print the
//! certificates EHR hosts must trust.

use std::{
    fmt::Write as _,
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::proxy::tls::{
    CaCertificate, CaSpec, DEFAULT_CA_DIR, InitOutcome, LeafName, LocalCa, rotation,
};

#[derive(Subcommand)]
pub enum CaCommand {
    /// Create the node CA (ca.pem and ca.key, 0600). An existing CA is kept unless --force.
    Init(InitArgs),
    /// Print the CA certificate to stdout (and, while a rotation is pending, the next one after
    /// it), and on stderr how EHR hosts trust it.
    Export(ExportArgs),
    /// Create the next node CA, for the protected upstreams of the agent's current policy; the
    /// running agent switches to it after the overlap. Export and install both before then.
    Rotate(RotateArgs),
}

#[derive(Args)]
pub struct RotateArgs {
    /// The agent's configuration: its state directory holds the CA, its policies name what the
    /// new CA may sign for.
    #[arg(long, default_value = "/etc/fhirwall/agent.yaml")]
    pub config: PathBuf,
    /// How long EHR hosts are given to trust the next CA before the agent switches to it
    /// (e.g. `168h`, `30m`).
    #[arg(long, default_value = "168h")]
    pub overlap: jiff::SignedDuration,
    /// Validity of the new CA certificate, in days.
    #[arg(long, default_value_t = 182)]
    pub days: u64,
}

#[derive(Args)]
pub struct InitArgs {
    /// Directory of ca.pem and ca.key.
    #[arg(long, default_value = DEFAULT_CA_DIR)]
    pub dir: PathBuf,
    /// Node name in the CA's common name; the host name when absent.
    #[arg(long)]
    pub node: Option<String>,
    /// Replace an existing CA. Every host that trusted the old one must be given the new one.
    #[arg(long)]
    pub force: bool,
    /// Limit the CA to these names and addresses (X.509 name constraints): a DNS name permits
    /// itself and its subdomains, an address itself. The agent creates its CA with the
    /// protected upstreams' names and addresses; use this to create one by hand.
    #[arg(long = "permit", value_name = "NAME|ADDRESS")]
    pub permit: Vec<String>,
    /// Validity of the CA certificate, in days.
    #[arg(long, default_value_t = 182)]
    pub days: u64,
}

#[derive(Args)]
pub struct ExportArgs {
    /// Directory of ca.pem.
    #[arg(long, default_value = DEFAULT_CA_DIR)]
    pub dir: PathBuf,
    /// Output encoding.
    #[arg(long, value_enum, default_value_t = Format::Pem)]
    pub format: Format,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Pem,
    Der,
}

pub fn run(command: &CaCommand) -> anyhow::Result<ExitCode> {
    match command {
        CaCommand::Init(args) => {
            println!("{}", init(args)?);
        }
        CaCommand::Export(args) => {
            let mut stdout = std::io::stdout().lock();
            if args.format == Format::Der && stdout.is_terminal() {
                anyhow::bail!("DER is binary: redirect it to a file (or use --format pem)");
            }
            let (bytes, advice) = export(args)?;
            stdout.write_all(&bytes)?;
            stdout.flush()?;
            eprint!("{advice}");
        }
        CaCommand::Rotate(args) => println!("{}", rotate(args)?),
    }
    Ok(ExitCode::SUCCESS)
}

/// Writes the next CA beside the current one; returns what to do next, for people.
fn rotate(args: &RotateArgs) -> anyhow::Result<String> {
    let config = crate::config::AgentConfig::load(&args.config)?;
    let policy = fhirwall_policy::Policy::load(&config.policies)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading the policies in {}", config.policies.display()))?;
    let dir = crate::app::ca_dir(&config);
    let spec = CaSpec {
        validity: std::time::Duration::from_hours(args.days.saturating_mul(24)),
        ..crate::app::ca_spec(&config, &policy)
    };
    let switch_at = jiff::Timestamp::now()
        .checked_add(args.overlap)
        .context("the overlap is too long")?;
    rotation::prepare(&dir, &spec, switch_at)?;
    let next = CaCertificate::read(&rotation::next_dir(&dir))?;
    Ok(format!(
        "next node CA in {}\n{}\nthe running agent switches to it at {switch_at}; before then, \
         `fhirwall ca export --dir {}` (both certificates) and install it on every EHR host",
        rotation::next_dir(&dir).display(),
        describe(&next),
        dir.display(),
    ))
}

/// Creates or keeps the CA; returns what happened, for people.
fn init(args: &InitArgs) -> anyhow::Result<String> {
    let node = args.node.clone().unwrap_or_else(crate::config::hostname);
    let spec = CaSpec {
        node,
        validity: std::time::Duration::from_hours(args.days.saturating_mul(24)),
        permitted: args
            .permit
            .iter()
            .map(|name| LeafName::parse(name))
            .collect::<Result<_, _>>()?,
    };
    let (what, ca) = if args.force {
        (
            "created (replacing any previous CA)",
            LocalCa::create(&args.dir, &spec)?,
        )
    } else {
        match LocalCa::init(&args.dir, &spec)? {
            (ca, InitOutcome::Created) => ("created", ca),
            (ca, InitOutcome::Kept) => ("kept the existing CA (use --force to replace it)", ca),
        }
    };
    let cert = CaCertificate::read(ca.dir())?;
    Ok(format!(
        "{what} in {}\n{}\nnext: `fhirwall ca export --dir {}` and install it on every EHR host",
        args.dir.display(),
        describe(&cert),
        args.dir.display(),
    ))
}

/// The certificate in the asked format, and the advice for stderr.
fn export(args: &ExportArgs) -> anyhow::Result<(Vec<u8>, String)> {
    let cert = CaCertificate::read(&args.dir).with_context(|| {
        format!(
            "no usable CA in {} (run `fhirwall ca init`)",
            args.dir.display()
        )
    })?;
    let next = rotation::pending(&args.dir)?
        .map(|_| CaCertificate::read(&rotation::next_dir(&args.dir)))
        .transpose()?;
    let bytes = match (args.format, &next) {
        (Format::Pem, None) => cert.pem.clone().into_bytes(),
        // Both, so hosts keep trusting the sidecar across the switch.
        (Format::Pem, Some(next)) => format!("{}{}", cert.pem, next.pem).into_bytes(),
        (Format::Der, None) => cert.der.to_vec(),
        (Format::Der, Some(_)) => {
            anyhow::bail!("a rotation is pending: two certificates need --format pem")
        }
    };
    let mut advice = advice(&cert, &args.dir.join("ca.pem"));
    if let Some(next) = &next {
        let _ = writeln!(
            advice,
            "and the next node CA ({}), which the agent switches to after the overlap: install both",
            describe(next).replace('\n', ", ")
        );
    }
    Ok((bytes, advice))
}

fn describe(cert: &CaCertificate) -> String {
    let expires = jiff::Timestamp::try_from(cert.not_after)
        .map_or_else(|_| "?".to_owned(), |t| t.strftime("%Y-%m-%d").to_string());
    format!(
        "SHA-256 fingerprint {}\nvalid until {expires}",
        cert.sha256_fingerprint()
    )
}

/// How EHR hosts trust the CA; the README section (proxy/tls/README-ca.md) says more.
fn advice(cert: &CaCertificate, pem: &Path) -> String {
    let pem = pem.display();
    format!(
        "fhirwall node CA: {}
Trust it on every host whose applications call protected FHIR endpoints (copy {pem} there):
  Debian/Ubuntu  cp ca.pem /usr/local/share/ca-certificates/fhirwall-node-ca.crt && update-ca-certificates
  RHEL/Fedora    cp ca.pem /etc/pki/ca-trust/source/anchors/fhirwall-node-ca.pem && update-ca-trust extract
  Java           keytool -importcert -noprompt -cacerts -alias fhirwall-node-ca -file ca.pem -storepass changeit
  Python         requests/httpx use certifi, not the system store: REQUESTS_CA_BUNDLE or SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
  Node.js        NODE_EXTRA_CA_CERTS=/path/to/ca.pem
Clients that pin the server's certificate cannot be intercepted: do not protect their
destination, or point them at the sidecar's plain-HTTP listener on loopback.
",
        describe(cert).replace('\n', ", ")
    )
}

#[cfg(test)]
mod tests {
    use rustls::pki_types::{CertificateDer, pem::PemObject};

    use super::*;

    fn init_args(dir: &Path, force: bool) -> InitArgs {
        InitArgs {
            dir: dir.to_owned(),
            node: Some("ehr-7".into()),
            force,
            permit: Vec::new(),
            days: 3650,
        }
    }

    #[test]
    fn init_is_idempotent_and_force_replaces() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca");
        let first = init(&init_args(&ca, false)).expect("init");
        assert!(first.starts_with("created in"), "{first}");
        let pem = std::fs::read(ca.join("ca.pem")).expect("read");
        let again = init(&init_args(&ca, false)).expect("init again");
        assert!(again.starts_with("kept the existing CA"), "{again}");
        assert_eq!(std::fs::read(ca.join("ca.pem")).expect("read"), pem);
        let forced = init(&init_args(&ca, true)).expect("force");
        assert!(forced.starts_with("created (replacing"), "{forced}");
        assert_ne!(std::fs::read(ca.join("ca.pem")).expect("read"), pem);
    }

    #[test]
    fn export_prints_the_certificate_in_either_format_and_advice() {
        let dir = tempfile::tempdir().expect("tempdir");
        init(&init_args(dir.path(), false)).expect("init");
        let export_as = |format| {
            export(&ExportArgs {
                dir: dir.path().to_owned(),
                format,
            })
            .expect("export")
        };
        let (pem, advice) = export_as(Format::Pem);
        assert_eq!(pem, std::fs::read(dir.path().join("ca.pem")).expect("read"));
        let (der, _) = export_as(Format::Der);
        let from_pem = CertificateDer::from_pem_slice(&pem).expect("PEM");
        assert_eq!(der, from_pem.as_ref());
        for needle in [
            "update-ca-certificates",
            "update-ca-trust",
            "keytool",
            "NODE_EXTRA_CA_CERTS",
            "REQUESTS_CA_BUNDLE",
            "pin",
        ] {
            assert!(advice.contains(needle), "advice lacks {needle}");
        }

        // Export needs no key: it works even when ca.key is unreadable or gone.
        std::fs::remove_file(dir.path().join("ca.key")).expect("rm");
        assert_eq!(export_as(Format::Pem).0, pem);
    }

    #[test]
    fn while_a_rotation_is_pending_export_prints_both_certificates() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca");
        init(&init_args(&ca, false)).expect("init");
        let overlap: jiff::SignedDuration = "168h".parse().expect("the default overlap");
        let at = jiff::Timestamp::now() + overlap;
        let next = rotation::prepare(&ca, &CaSpec::new("ehr-7"), at).expect("prepare");
        let args = |format| ExportArgs {
            dir: ca.clone(),
            format,
        };
        let (pem, advice) = export(&args(Format::Pem)).expect("export");
        let certs: Vec<CertificateDer<'_>> = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .expect("PEM");
        let current = LocalCa::load(&ca).expect("load");
        assert_eq!(
            certs,
            vec![current.cert_der().clone(), next.cert_der().clone()]
        );
        assert!(advice.contains("install both"), "{advice}");
        assert!(
            export(&args(Format::Der)).is_err(),
            "DER holds one certificate"
        );
        assert!("30m".parse::<jiff::SignedDuration>().is_ok());
    }

    #[test]
    fn export_without_a_ca_says_how_to_make_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = export(&ExportArgs {
            dir: dir.path().to_owned(),
            format: Format::Pem,
        })
        .expect_err("no CA");
        assert!(format!("{err:#}").contains("fhirwall ca init"), "{err:#}");
    }
}
