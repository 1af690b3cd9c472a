//! Builds the kernel programs (fhirwall-ebpf) with aya-build and leaves the object in OUT_DIR, where
//! `kernel::load` embeds it with `include_bytes_aligned!`.
//!
//! `AYA_BUILD_SKIP=1` skips the kernel build for work on userspace-only modules; the binary then
//! carries an empty object and `fhirwall run` refuses to start with a clear error. CI never sets it.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::{Package, Toolchain};

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").ok_or_else(|| anyhow!("OUT_DIR not set"))?);
    let object = out_dir.join("fhirwall");
    let skip = env::var("AYA_BUILD_SKIP").is_ok_and(|v| v == "1" || v.eq_ignore_ascii_case("true"));
    if skip {
        fs::write(&object, b"").context("writing the empty kernel object")?;
    }
    let manifest_dir = env::var("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR not set")?;
    let ebpf_dir = PathBuf::from(manifest_dir).join("../fhirwall-ebpf");
    let ebpf_dir = ebpf_dir
        .to_str()
        .ok_or_else(|| anyhow!("non-UTF-8 path {}", ebpf_dir.display()))?;
    println!("cargo:rerun-if-changed={ebpf_dir}/../fhirwall-common/src");
    aya_build::build_ebpf(
        [Package {
            name: "fhirwall-ebpf",
            root_dir: ebpf_dir,
            ..Package::default()
        }],
        Toolchain::default(),
    )
}
