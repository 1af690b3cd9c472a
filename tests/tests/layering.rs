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

/// Inside the agent crate, the TLS layer makes connections from connection specs: it does not
/// read the policy's model (upstreams, integrations), which the app turns into those specs.
/// The one policy type it takes is the plain `TlsMode` enum.
#[test]
fn the_tls_layer_does_not_read_the_policy_model() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../fhirwall/src/proxy");
    let mut files = vec![std::path::PathBuf::from(root).join("tls.rs")];
    let mut dirs = vec![std::path::PathBuf::from(root).join("tls")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("tls sources") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    assert!(files.len() > 5, "found the TLS sources: {files:?}");
    for file in files {
        let text = std::fs::read_to_string(&file).expect("source");
        for (i, line) in text.lines().enumerate() {
            let Some(at) = line.find("fhirwall_policy") else {
                continue;
            };
            let used = &line[at..];
            assert!(
                used.starts_with("fhirwall_policy::TlsMode"),
                "{}:{}: the TLS layer reads the policy model: {line}",
                file.display(),
                i + 1
            );
        }
    }
}

/// Metrics show numbers under names: the kernel and the policy name their own counters and
/// expiries, and the app hands them over, so `metrics.rs` reads neither the kernel's types nor
/// the policy model (its tests may build a policy to feed it).
#[test]
fn metrics_read_neither_kernel_types_nor_the_policy_model() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fhirwall/src/metrics.rs");
    let text = std::fs::read_to_string(path).expect("metrics source");
    let production = text.split("#[cfg(test)]").next().unwrap_or_default();
    assert!(production.contains("pub fn set_policy"), "read {path}");
    for forbidden in [
        "crate::kernel",
        "KernelStats",
        "Policy,",
        "Policy}",
        "&Policy",
    ] {
        assert!(
            !production.contains(forbidden),
            "metrics.rs names {forbidden}: hand it names and numbers instead"
        );
    }
}
