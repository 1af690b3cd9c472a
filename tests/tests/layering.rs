//! The layers of the data path are crates, so an import that runs against the data path does
//! not compile. What a layer may depend on is checked here: the pure layers (FHIR
//! classification and the policy) build without the kernel side, the audit store, the local CA
//! or an async runtime, so that they compile, test and fuzz on any machine; the HTTP engine
//! knows nothing of FHIR or policy.

use std::process::Command;

/// Crates no layer below the agent may pull in, directly or through another dependency.
const FORBIDDEN: [&str; 5] = ["aya", "aya-build", "rusqlite", "rcgen", "fhirwall"];

/// The normal (non-dev, non-build) dependency tree of `package`, one crate name per line.
fn dependencies(package: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "-e",
            "normal",
            "--prefix",
            "none",
            "-p",
            package,
        ])
        .args(["--format", "{p}"])
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "cargo tree -p {package}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

#[test]
fn each_layer_depends_only_on_the_layers_below_it() {
    for (package, allowed_own, runtime) in [
        ("fhirwall-fhir", &[][..], false),
        ("fhirwall-policy", &["fhirwall-fhir"][..], false),
        ("fhirwall-http", &[][..], true),
    ] {
        let deps = dependencies(package);
        assert!(
            runtime || !deps.iter().any(|d| d == "tokio"),
            "{package} depends on tokio: {deps:?}"
        );
        assert!(deps.iter().any(|d| d == package), "{package}: {deps:?}");
        for d in &deps {
            assert!(
                !FORBIDDEN.contains(&d.as_str()),
                "{package} depends on {d}: {deps:?}"
            );
            if d.starts_with("fhirwall") && d != package {
                assert!(
                    allowed_own.contains(&d.as_str()),
                    "{package} depends on {d}, a layer above it"
                );
            }
        }
    }
}
