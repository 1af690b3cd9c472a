use std::{fs, os::unix::fs::PermissionsExt, time::Duration};

use x509_parser::{extensions::GeneralName, prelude::X509Certificate};

use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn parse(der: &[u8]) -> X509Certificate<'_> {
    x509_parser::parse_x509_certificate(der).expect("X.509").1
}

#[test]
fn init_creates_load_round_trips_and_init_is_idempotent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_dir = dir.path().join("nested/ca");
    let (ca, outcome) = LocalCa::init(&ca_dir, &CaSpec::new("ehr-node-1")).expect("init");
    assert_eq!(outcome, InitOutcome::Created);
    assert_eq!(mode(&ca_dir.join(CA_KEY_FILE)), 0o600);
    assert_eq!(mode(&ca_dir.join(CA_CERT_FILE)), 0o600);
    assert_eq!(mode(&ca_dir), 0o700);

    let loaded = LocalCa::load(&ca_dir).expect("load");
    assert_eq!(loaded.cert_der(), ca.cert_der());
    assert_eq!(loaded.cert_pem(), ca.cert_pem());
    assert_eq!(
        ca.cert_pem(),
        fs::read_to_string(ca_dir.join(CA_CERT_FILE)).expect("read")
    );

    let (again, outcome) = LocalCa::init(&ca_dir, &CaSpec::new("other-name")).expect("init");
    assert_eq!(outcome, InitOutcome::Kept);
    assert_eq!(
        again.cert_der(),
        ca.cert_der(),
        "init replaced an existing CA"
    );

    let replaced = LocalCa::create(&ca_dir, &CaSpec::new("ehr-node-1")).expect("force");
    assert_ne!(replaced.cert_der(), ca.cert_der());
    assert_eq!(mode(&ca_dir.join(CA_KEY_FILE)), 0o600);
}

#[test]
fn a_key_others_can_read_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    LocalCa::init(dir.path(), &CaSpec::new("n")).expect("init");
    let key = dir.path().join(CA_KEY_FILE);
    fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).expect("chmod");
    for result in [
        LocalCa::load(dir.path()).map(|_| ()),
        LocalCa::init(dir.path(), &CaSpec::new("n")).map(|_| ()),
    ] {
        match result {
            Err(
                e @ TlsError::KeyFile(crate::private_files::PrivateFileError::Mode {
                    mode: 0o644,
                    ..
                }),
            ) => {
                assert_eq!(e.error_source(), crate::proxy::tls::TlsErrorSource::CaStore);
            }
            other => panic!("expected a mode refusal, got {other:?}"),
        }
    }
}

#[test]
fn half_a_ca_is_reported_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    LocalCa::init(dir.path(), &CaSpec::new("n")).expect("init");
    let key = fs::read(dir.path().join(CA_KEY_FILE)).expect("read");
    fs::remove_file(dir.path().join(CA_CERT_FILE)).expect("rm");
    assert!(matches!(
        LocalCa::init(dir.path(), &CaSpec::new("n")),
        Err(TlsError::CaIncomplete {
            missing: CA_CERT_FILE,
            ..
        })
    ));
    assert_eq!(
        fs::read(dir.path().join(CA_KEY_FILE)).expect("read"),
        key,
        "key kept"
    );
}

#[test]
fn a_certificate_of_another_key_or_no_ca_is_refused() {
    let (a, b) = (
        tempfile::tempdir().expect("tempdir"),
        tempfile::tempdir().expect("tempdir"),
    );
    LocalCa::init(a.path(), &CaSpec::new("a")).expect("init");
    LocalCa::init(b.path(), &CaSpec::new("b")).expect("init");
    fs::copy(b.path().join(CA_CERT_FILE), a.path().join(CA_CERT_FILE)).expect("copy");
    assert!(matches!(
        LocalCa::load(a.path()),
        Err(TlsError::CaMismatch { .. })
    ));

    // A certificate that is not a CA is refused, even with its own key.
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("key");
    let not_ca = CertificateParams::new(vec!["x.example".to_owned()])
        .expect("params")
        .self_signed(&key)
        .expect("self-signed");
    fs::write(b.path().join(CA_CERT_FILE), not_ca.pem()).expect("write");
    fs::write(b.path().join(CA_KEY_FILE), key.serialize_pem()).expect("write");
    match LocalCa::load(b.path()) {
        Err(TlsError::CaMismatch { reason, .. }) => {
            assert!(reason.contains("not a CA"), "{reason}");
        }
        other => panic!("expected CaMismatch, got {other:?}"),
    }

    fs::write(b.path().join(CA_CERT_FILE), "no pem here\n").expect("write");
    assert!(matches!(
        LocalCa::load(b.path()),
        Err(TlsError::BadPem { .. })
    ));
}

#[test]
fn ca_certificate_is_a_leaf_only_p256_ca_named_for_the_node() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, _) = LocalCa::init(dir.path(), &CaSpec::new("ehr-node-7")).expect("init");
    let cert = parse(ca.cert_der());
    let bc = cert
        .basic_constraints()
        .expect("ext")
        .expect("basicConstraints")
        .value;
    assert!(bc.ca);
    assert_eq!(bc.path_len_constraint, Some(0));
    let ku = cert.key_usage().expect("ext").expect("keyUsage").value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    let cn = cert
        .subject()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .expect("CN");
    assert_eq!(cn, "fhirwall node CA ehr-node-7");
    assert_eq!(
        cert.public_key()
            .algorithm
            .parameters
            .as_ref()
            .map(|p| p.as_oid().expect("curve oid").to_id_string()),
        Some("1.2.840.10045.3.1.7".to_owned()),
        "P-256"
    );
    let lifetime = cert.validity().not_after.timestamp() - cert.validity().not_before.timestamp();
    assert!(
        (150 * 24 * 3600..=200 * 24 * 3600).contains(&lifetime),
        "months, not years: {lifetime}s"
    );
    assert!(cert.name_constraints().expect("ext").is_none());
}

#[test]
fn permitted_names_become_name_constraints_and_the_scope_read_back_covers_exactly_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names =
        ["fhir.ehr.example", "10.0.0.1", "fd00::5"].map(|n| LeafName::parse(n).expect("name"));
    let spec = CaSpec {
        permitted: names.to_vec(),
        ..CaSpec::new("n")
    };
    let (ca, _) = LocalCa::init(dir.path(), &spec).expect("init");
    let cert = parse(ca.cert_der());
    let nc = cert
        .name_constraints()
        .expect("ext")
        .expect("nameConstraints")
        .value;
    let permitted = nc.permitted_subtrees.as_ref().expect("permitted");
    assert_eq!(
        permitted.iter().map(|s| s.base.clone()).collect::<Vec<_>>(),
        vec![
            GeneralName::DNSName("fhir.ehr.example"),
            GeneralName::IPAddress(&[10, 0, 0, 1, 255, 255, 255, 255]),
            GeneralName::IPAddress(&[
                0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 255, 255, 255, 255, 255, 255,
                255, 255, 255, 255, 255, 255, 255, 255, 255, 255
            ]),
        ]
    );
    let loaded = LocalCa::load(dir.path()).expect("load");
    let scope = loaded.scope();
    assert!(scope.is_constrained());
    for (name, covered) in [
        ("fhir.ehr.example", true),
        ("api.fhir.ehr.example", true),
        ("evilfhir.ehr.example", false),
        ("ehr.example", false),
        ("10.0.0.1", true),
        ("10.0.0.2", false),
        ("fd00::5", true),
        ("fd00::6", false),
    ] {
        let name = LeafName::parse(name).expect("name");
        assert_eq!(scope.covers(&name), covered, "{name}");
    }
    assert!(!scope.covers(&LeafName::IpWithHost(
        "10.0.0.1".parse().expect("ip"),
        "other.example".into()
    )));
    let unconstrained = tempfile::tempdir().expect("tempdir");
    let (open, _) = LocalCa::init(unconstrained.path(), &CaSpec::new("n")).expect("init");
    assert!(!open.scope().is_constrained());
    assert!(
        open.scope()
            .covers(&LeafName::parse("anything.example").expect("name"))
    );
}

#[test]
fn leaves_name_exactly_the_server_and_expire_with_the_ca() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = CaSpec {
        validity: Duration::from_hours(3 * 24),
        ..CaSpec::new("n")
    };
    let (ca, _) = LocalCa::init(dir.path(), &spec).expect("init");
    let now = SystemTime::now();
    let week = Duration::from_hours(7 * 24);
    for (name, want) in [
        ("fhir.ehr.example", GeneralName::DNSName("fhir.ehr.example")),
        ("10.9.8.7", GeneralName::IPAddress(&[10, 9, 8, 7])),
    ] {
        let leaf = ca
            .mint(&LeafName::parse(name).expect("name"), week, now)
            .expect("mint");
        let cert = parse(&leaf.cert);
        let san = cert.subject_alternative_name().expect("ext").expect("SAN");
        assert_eq!(san.value.general_names, vec![want]);
        assert!(
            !cert
                .basic_constraints()
                .expect("ext")
                .is_some_and(|b| b.value.ca)
        );
        let eku = cert.extended_key_usage().expect("ext").expect("EKU").value;
        assert!(eku.server_auth && !eku.client_auth);
        assert_eq!(cert.issuer(), parse(ca.cert_der()).subject());
        // Capped at the CA's expiry (3 days) rather than the week asked for.
        assert_eq!(leaf.not_after, ca.not_after());
        assert_eq!(
            cert.validity().not_after.timestamp(),
            i64::try_from(
                ca.not_after()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .expect("after epoch")
                    .as_secs()
            )
            .expect("fits")
        );
    }
    let short = ca
        .mint(
            &LeafName::parse("a.example").expect("name"),
            Duration::from_hours(1),
            now,
        )
        .expect("mint");
    assert!(short.not_after < ca.not_after());
}

#[test]
fn common_names_fit_x509_limits() {
    assert_eq!(common_name("node-1"), "fhirwall node CA node-1");
    let long = common_name(&"n".repeat(500));
    assert_eq!(long.len(), MAX_COMMON_NAME);
    assert_eq!(common_name("bad\n\u{7}name"), "fhirwall node CA badname");
}

#[test]
fn certificate_block_is_cut_from_surrounding_text() {
    let text = "comment\n-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\ntrailer\n";
    assert_eq!(
        first_certificate_block(text),
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"
    );
}
