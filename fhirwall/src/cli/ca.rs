//! `fhirwall ca init` and `fhirwall ca export`: create the node-local CA the sidecar mints leaf
//! certificates from, and print the certificate EHR hosts must trust.

use std::{
    io::{IsTerminal, Write},
    path::{Path, PathBuf},
    process::ExitCode,
};

use anyhow::Context;
use clap::{Args, Subcommand, ValueEnum};

use crate::proxy::tls::{CaCertificate, CaSpec, DEFAULT_CA_DIR, InitOutcome, LocalCa};

#[derive(Subcommand)]
pub enum CaCommand {
    /// Create the node CA (ca.pem 0644, ca.key 0600). An existing CA is kept unless --force.
    Init(InitArgs),
    /// Print the CA certificate to stdout, and on stderr how EHR hosts trust it.
    Export(ExportArgs),
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
    /// Limit the CA to these DNS subtrees (X.509 name constraints), e.g. `ehr.example`. Clients
    /// connecting to other names, or by IP address, then fail verification.
    #[arg(long = "permit-dns", value_name = "DOMAIN")]
    pub permit_dns: Vec<String>,
    /// Validity of the CA certificate, in days.
    #[arg(long, default_value_t = 3650)]
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
    }
    Ok(ExitCode::SUCCESS)
}

/// Creates or keeps the CA; returns what happened, for people.
fn init(args: &InitArgs) -> anyhow::Result<String> {
    let node = args.node.clone().unwrap_or_else(crate::config::hostname);
    let spec = CaSpec {
        node,
        validity: std::time::Duration::from_hours(args.days.saturating_mul(24)),
        permitted_dns: args.permit_dns.clone(),
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
    let bytes = match args.format {
        Format::Pem => cert.pem.clone().into_bytes(),
        Format::Der => cert.der.to_vec(),
    };
    Ok((bytes, advice(&cert, &args.dir.join("ca.pem"))))
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
            permit_dns: Vec::new(),
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
