//! bpffs: where links and maps are pinned so enforcement outlives the agent process.

use std::{fs, path::Path};

use super::KernelError;

/// Mounts bpffs at `/sys/fs/bpf` unless `pin_dir` already sits on a bpffs mount.
pub fn ensure_mounted(pin_dir: &Path) -> Result<(), KernelError> {
    let mounts = fs::read_to_string("/proc/mounts").map_err(|source| KernelError::Io {
        path: "/proc/mounts".into(),
        source,
    })?;
    if on_bpffs(&mounts, pin_dir) {
        return Ok(());
    }
    let base = Path::new("/sys/fs/bpf");
    if !pin_dir.starts_with(base) {
        return Err(KernelError::Bpffs {
            path: pin_dir.to_owned(),
            source: std::io::Error::other("the pin directory is not on a bpffs mount"),
        });
    }
    fs::create_dir_all(base).map_err(|source| KernelError::Bpffs {
        path: base.into(),
        source,
    })?;
    nix::mount::mount(
        Some("bpffs"),
        base,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|e| KernelError::Bpffs {
        path: base.into(),
        source: e.into(),
    })
}

fn on_bpffs(mounts: &str, path: &Path) -> bool {
    mounts.lines().any(|line| {
        let mut fields = line.split_ascii_whitespace();
        matches!((fields.next(), fields.next(), fields.next()),
            (Some(_), Some(mount), Some("bpf")) if path.starts_with(mount))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_a_pin_dir_on_bpffs() {
        let mounts = "bpf /sys/fs/bpf bpf rw 0 0\nproc /proc proc rw 0 0\n";
        assert!(on_bpffs(mounts, Path::new("/sys/fs/bpf/fhirwall")));
        assert!(!on_bpffs(mounts, Path::new("/run/fhirwall")));
        assert!(!on_bpffs(
            "proc /proc proc rw 0 0\n",
            Path::new("/sys/fs/bpf/fhirwall")
        ));
    }
}
