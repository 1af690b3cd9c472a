//! Reading a process from procfs: `stat`, `status`, `exe`, `cmdline`, `cgroup`.
//!
//! Everything a process controls is hostile input here: `comm` may hold spaces, parentheses and
//! newlines, the command line any bytes. Parsers are pure functions, tested at the bottom.

use std::{
    fs::{self, File},
    io::{self, Read as _},
    os::unix::fs::{FileExt as _, MetadataExt as _},
    path::{Path, PathBuf},
};

use super::AttributionError;

/// `PF_KTHREAD` from include/linux/sched.h: kernel threads have no executable and no user identity.
const PF_KTHREAD: u32 = 0x0020_0000;

/// The kernel appends this to the link text of an unlinked file (fs/d_path.c, `d_path`).
const DELETED_SUFFIX: &str = " (deleted)";

/// The fields of `/proc/<pid>/stat` attribution needs (proc(5)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcStat {
    /// Field 2, without its parentheses: the thread group leader's task name.
    pub comm: String,
    /// Field 3: `R`, `S`, `Z`, ...
    pub state: char,
    /// Field 9: `PF_*` flags.
    pub flags: u32,
    /// Field 22: start time in clock ticks since boot.
    pub start_time: u64,
}

impl ProcStat {
    #[must_use]
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

/// Parses a `/proc/<pid>/stat` line. `comm` is whatever lies between the first `(` and the LAST
/// `)`: the kernel prints it raw, so it may itself contain `)`, spaces or newlines, but nothing
/// after it can contain `)`.
pub fn parse_stat(text: &[u8]) -> Result<ProcStat, &'static str> {
    let open = text
        .iter()
        .position(|&b| b == b'(')
        .ok_or("no '(' before comm")?;
    let close = text
        .iter()
        .rposition(|&b| b == b')')
        .ok_or("no ')' after comm")?;
    if close < open {
        return Err("')' before '('");
    }
    let rest = std::str::from_utf8(&text[close + 1..]).map_err(|_| "fields are not ASCII")?;
    // The first field after comm is field 3 (state): field N is the (N - 3)th from here.
    let mut fields = rest.split_ascii_whitespace();
    let mut state = fields.next().ok_or("too few fields")?.chars();
    let (Some(state), None) = (state.next(), state.next()) else {
        return Err("state is not one character");
    };
    let flags = fields
        .nth(9 - 4)
        .ok_or("too few fields")?
        .parse()
        .map_err(|_| "flags is not a number")?;
    let start_time = fields
        .nth(22 - 10)
        .ok_or("too few fields")?
        .parse()
        .map_err(|_| "start time is not a number")?;
    let comm = String::from_utf8_lossy(&text[open + 1..close]).into_owned();
    Ok(ProcStat {
        comm,
        state,
        flags,
        start_time,
    })
}

/// Splits `/proc/<pid>/cmdline` at NULs. The final NUL terminates the last argument rather than
/// starting an empty one; arguments that are not UTF-8 are converted lossily. A process that
/// rewrote its arguments (setproctitle) may show them as one space-separated string: it is kept
/// as it is.
#[must_use]
pub fn split_cmdline(bytes: &[u8]) -> Vec<String> {
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .strip_suffix(&[0])
        .unwrap_or(bytes)
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The real uid and gid in a `/proc/<pid>/status` text: the same ids the kernel programs record
/// (`bpf_get_current_uid_gid` returns the real ones).
#[must_use]
pub fn parse_status_ids(text: &str) -> Option<(u32, u32)> {
    let first = |key: &str| {
        text.lines()
            .find_map(|line| line.strip_prefix(key))
            .and_then(|rest| rest.split_ascii_whitespace().next())
            .and_then(|id| id.parse().ok())
    };
    Some((first("Uid:")?, first("Gid:")?))
}

/// The cgroup v2 path in a `/proc/<pid>/cgroup` text: the `0::` line (cgroups(7)).
#[must_use]
pub fn parse_cgroup_v2_line(text: &str) -> Option<&str> {
    text.lines().find_map(|line| line.strip_prefix("0::"))
}

/// The path an `exe` link names, and whether the file was deleted. The suffix alone is not
/// proof: a file may really be called `x (deleted)`, so it only counts when the open file has no
/// links left.
#[must_use]
pub fn strip_deleted(link: PathBuf, nlink: Option<u64>) -> (PathBuf, bool) {
    if nlink != Some(0) {
        return (link, false);
    }
    match link.to_str().and_then(|s| s.strip_suffix(DELETED_SUFFIX)) {
        Some(stripped) => (PathBuf::from(stripped), true),
        None => (link, true),
    }
}

/// Whether an error means the process is gone (or going: a reaped task answers `ESRCH`).
#[must_use]
pub fn is_gone(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc::ESRCH)
}

/// A procfs mount (`/proc`; tests point it at a directory of their own).
#[derive(Clone, Debug)]
pub struct ProcFs {
    root: PathBuf,
}

/// What the slow path reads about a process, each part on its own: one unreadable part does not
/// hide the others.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub exe: Option<(PathBuf, bool)>,
    /// See [`fhirwall_policy::Workload::exe_verified`].
    pub exe_verified: bool,
    /// The running image, opened through `/proc/<tgid>/exe` so a replaced file is hashed as what
    /// actually runs.
    pub exe_file: Option<File>,
    pub cmdline: Vec<String>,
    pub cgroup_path: Option<String>,
}

impl ProcFs {
    #[must_use]
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, tgid: u32, leaf: &str) -> PathBuf {
        self.root.join(tgid.to_string()).join(leaf)
    }

    /// `stat` of the thread group leader, from `task/<tgid>/stat`. It has the same start time,
    /// comm and flags as `/proc/<tgid>/stat` but skips summing the CPU times of every thread
    /// (fs/proc/array.c, `do_task_stat` with `whole = 0`): a Java interface engine with hundreds
    /// of threads would otherwise pay for each.
    pub fn stat(&self, tgid: u32) -> Result<ProcStat, AttributionError> {
        let path = self.stat_path(tgid);
        let file = File::open(&path).map_err(|source| AttributionError::Proc {
            path: path.clone(),
            source,
        })?;
        let mut buf = [0u8; 2048];
        let len = pread_once(&file, &mut buf).map_err(|source| AttributionError::Proc {
            path: path.clone(),
            source,
        })?;
        parse_stat(&buf[..len]).map_err(|reason| AttributionError::ProcFormat { path, reason })
    }

    fn stat_path(&self, tgid: u32) -> PathBuf {
        self.root.join(format!("{tgid}/task/{tgid}/stat"))
    }

    /// Real uid and gid from `status`.
    pub fn ids(&self, tgid: u32) -> Result<(u32, u32), AttributionError> {
        let path = self.path(tgid, "status");
        let text = fs::read_to_string(&path).map_err(|source| AttributionError::Proc {
            path: path.clone(),
            source,
        })?;
        parse_status_ids(&text).ok_or(AttributionError::ProcFormat {
            path,
            reason: "no Uid: or Gid: line",
        })
    }

    /// Reads exe, cmdline and cgroup. Blocking: reading `cmdline` takes the target's mmap lock,
    /// which a hostile process can hold for long, so call this off the async threads.
    pub fn snapshot(&self, tgid: u32, cmdline_max: usize) -> Snapshot {
        let exe_file = File::open(self.path(tgid, "exe")).ok();
        let running = exe_file.as_ref().and_then(|f| f.metadata().ok());
        let exe = fs::read_link(self.path(tgid, "exe")).ok().map(|link| {
            strip_deleted(
                link,
                running.as_ref().map(std::os::unix::fs::MetadataExt::nlink),
            )
        });
        let exe_verified = match (&exe, &running) {
            (Some((path, false)), Some(running)) => self.root_installed(path, running),
            _ => false,
        };
        let cmdline = read_capped(&self.path(tgid, "cmdline"), cmdline_max)
            .map(|bytes| split_cmdline(&bytes))
            .unwrap_or_default();
        let cgroup_path = self.cgroup_path(tgid).ok().flatten();
        Snapshot {
            exe,
            exe_verified,
            exe_file,
            cmdline,
            cgroup_path,
        }
    }

    /// Whether `path` (as the process sees its executable) names, from the host's root, the very
    /// file that runs (same device and inode), and only root could have put it there: it and
    /// every directory above it are root's and not writable by group or others (a sticky
    /// directory, like `/tmp`, aside: others cannot replace root's entries in it). The host's
    /// root is PID 1's (`/proc/1/root`), so the answer is the same from a DaemonSet's own mount
    /// namespace; where PID 1 cannot be looked into (a sandbox's init), the agent's own root.
    /// Either way the file found must be the one that runs, so a process that bind-mounted
    /// another file over a registered path in a mount namespace of its own, or runs a file a
    /// user could swap, fails this.
    pub(crate) fn root_installed(&self, path: &Path, running: &fs::Metadata) -> bool {
        let Ok(relative) = path.strip_prefix("/") else {
            return false;
        };
        let safe = |meta: &fs::Metadata| {
            meta.uid() == 0 && (meta.mode() & 0o022 == 0 || meta.mode() & 0o1000 != 0)
        };
        // The root is reached through a `root` link; nothing below it may be a link.
        let Some(mut at) = ["1/root", "self/root"]
            .into_iter()
            .map(|link| self.root.join(link))
            .find(|root| fs::metadata(root).is_ok())
        else {
            return false;
        };
        if !fs::metadata(&at).is_ok_and(|root| root.is_dir() && safe(&root)) {
            return false;
        }
        let mut parts = relative.components().peekable();
        while let Some(part) = parts.next() {
            at.push(part);
            let Ok(meta) = fs::symlink_metadata(&at) else {
                return false;
            };
            if parts.peek().is_none() {
                return meta.is_file()
                    && (meta.dev(), meta.ino()) == (running.dev(), running.ino())
                    && meta.uid() == 0
                    && meta.mode() & 0o022 == 0;
            }
            if !meta.is_dir() || !safe(&meta) {
                return false;
            }
        }
        false
    }

    /// The cgroup v2 path from the `0::` line of `cgroup`.
    pub fn cgroup_path(&self, tgid: u32) -> Result<Option<String>, AttributionError> {
        let path = self.path(tgid, "cgroup");
        let text =
            fs::read_to_string(&path).map_err(|source| AttributionError::Proc { path, source })?;
        Ok(parse_cgroup_v2_line(&text).map(str::to_owned))
    }

    /// Every process (thread group) id listed at the root.
    pub fn tgids(&self) -> Result<Vec<u32>, AttributionError> {
        let entries = fs::read_dir(&self.root).map_err(|source| AttributionError::Proc {
            path: self.root.clone(),
            source,
        })?;
        Ok(entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect())
    }
}

/// Reads a small file from offset 0 into `buf` with ONE `pread`, returning its length. procfs
/// regenerates the whole text for a read at offset 0 and hands over all that fits, so a second
/// call would only return 0 at twice the cost. A stat line is under 1 KiB; were one longer than
/// `buf`, it is cut, and the fields attribution needs (up to 22) come first.
fn pread_once(file: &File, buf: &mut [u8]) -> io::Result<usize> {
    loop {
        match file.read_at(buf, 0) {
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            result => return result,
        }
    }
}

/// Reads at most `max` bytes.
fn read_capped(path: &Path, max: usize) -> io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    File::open(path)?
        .take(u64::try_from(max).unwrap_or(u64::MAX))
        .read_to_end(&mut bytes)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests;
