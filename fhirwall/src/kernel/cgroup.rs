//! The cgroup v2 hierarchy: where it is mounted, which cgroup a process is in, cgroup ids.

use std::{
    fs,
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
};

use super::KernelError;

/// Where a private cgroup2 hierarchy is mounted when the host has none mounted.
const PRIVATE_MOUNT: &str = "/run/fhirwall/cgroup2";

/// The mount point of the cgroup v2 hierarchy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CgroupRoot {
    pub mount: PathBuf,
}

impl CgroupRoot {
    /// Finds the cgroup2 mount in `/proc/mounts`, mounting a private one when there is none
    /// (hybrid and v1 hosts still have the v2 hierarchy in the kernel, only unmounted).
    pub fn discover() -> Result<Self, KernelError> {
        let mounts = read("/proc/mounts")?;
        if let Some(mount) = find_cgroup2(&mounts) {
            return Ok(Self { mount });
        }
        let path = PathBuf::from(PRIVATE_MOUNT);
        mount_cgroup2(&path).map_err(|source| KernelError::NoCgroup2 {
            path: path.clone(),
            source,
        })?;
        Ok(Self { mount: path })
    }

    /// The absolute directory of a cgroup given by its path inside the hierarchy (`/a/b`).
    #[must_use]
    pub fn dir(&self, cgroup_path: &str) -> PathBuf {
        self.mount.join(cgroup_path.trim_start_matches('/'))
    }
}

/// A cgroup v2 id: the inode number of its directory (what `bpf_get_current_cgroup_id` returns).
pub fn cgroup_id(dir: &Path) -> Result<u64, KernelError> {
    fs::metadata(dir)
        .map(|m| m.ino())
        .map_err(|source| KernelError::Io {
            path: dir.to_owned(),
            source,
        })
}

/// The calling process's cgroup v2 path, from the `0::` line of `/proc/self/cgroup`.
pub fn own_cgroup_path() -> Result<String, KernelError> {
    let text = read("/proc/self/cgroup")?;
    Ok(parse_v2_line(&text).unwrap_or("/").to_owned())
}

/// The cgroup v2 path in a `/proc/<pid>/cgroup` text.
#[must_use]
pub fn parse_v2_line(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

fn find_cgroup2(mounts: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|line| {
        let mut fields = line.split_ascii_whitespace();
        let (_, mount, fstype) = (fields.next()?, fields.next()?, fields.next()?);
        (fstype == "cgroup2").then(|| PathBuf::from(unescape_mount(mount)))
    })
}

/// `/proc/mounts` escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape_mount(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let Some(d) = octal {
            out.push((d[0] - b'0') * 64 + (d[1] - b'0') * 8 + (d[2] - b'0'));
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn mount_cgroup2(path: &Path) -> std::io::Result<()> {
    fs::create_dir_all(path)?;
    nix::mount::mount(
        Some("cgroup2"),
        path,
        Some("cgroup2"),
        nix::mount::MsFlags::empty(),
        None::<&str>,
    )
    .map_err(std::io::Error::from)
}

fn read(path: &str) -> Result<String, KernelError> {
    fs::read_to_string(path).map_err(|source| KernelError::Io {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_cgroup2_mount_among_v1_controllers() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu cgroup rw,cpu 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw 0 0\n";
        assert_eq!(
            find_cgroup2(mounts),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        assert_eq!(
            find_cgroup2("cgroup /sys/fs/cgroup/cpu cgroup rw 0 0\n"),
            None
        );
    }

    #[test]
    fn unescapes_octal_in_mount_points() {
        assert_eq!(unescape_mount(r"/mnt/my\040cgroup"), "/mnt/my cgroup");
        assert_eq!(unescape_mount(r"/a\134b"), r"/a\b");
        assert_eq!(unescape_mount(r"/a\9"), r"/a\9");
    }

    #[test]
    fn reads_the_v2_line_of_proc_cgroup() {
        let text = "12:cpu:/x\n0::/system.slice/lab.service\n";
        assert_eq!(parse_v2_line(text), Some("/system.slice/lab.service"));
        assert_eq!(parse_v2_line("1:name=systemd:/\n"), None);
    }
}
