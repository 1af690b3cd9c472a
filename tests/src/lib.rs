//! Shared helpers for the integration tests: requirement checks that skip on a laptop but fail in
//! CI, and RAII guards for everything a test creates in the kernel or the system.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::{Path, PathBuf},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

pub mod agent;
pub mod auth;
pub mod client_libs;
pub mod confined;
pub mod destination;
pub mod ehr;
pub mod fhir;
pub mod http1;
pub mod pki;
pub mod rsyslog;
pub mod synthetic;
pub mod tinyproxy;
pub mod upstream;
pub mod world;

static UNIQUE: AtomicU32 = AtomicU32::new(0);

/// A name no other test (or test run) uses.
#[must_use]
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        UNIQUE.fetch_add(1, Ordering::Relaxed)
    )
}

/// Whether this test can run here. Without root or BPF it prints why and returns false, so a
/// laptop run skips it; when `CI` is set it panics instead, because a skipped kernel test must
/// never count as a pass in CI.
#[must_use]
pub fn kernel_available(test: &str) -> bool {
    let reason = if !nix_is_root() {
        Some("needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("needs a kernel with BTF (/sys/kernel/btf/vmlinux)")
    } else {
        None
    };
    match reason {
        None => true,
        Some(reason) if std::env::var_os("CI").is_some() => {
            panic!("{test}: {reason}; CI must run kernel tests, refusing to skip")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            false
        }
    }
}

fn nix_is_root() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// A dedicated cgroup v2 sub-tree for one test: programs attach here, never at the root, so a
/// bug cannot cut this machine's own network. Removed (its processes killed) on drop.
pub struct TestCgroup {
    pub dir: PathBuf,
}

impl TestCgroup {
    pub fn new() -> anyhow::Result<Self> {
        Self::with_prefix("fhirwall-test")
    }

    /// A cgroup named `<prefix>-<pid>-<n>` under the cgroup v2 root (the demo uses its own).
    pub fn with_prefix(prefix: &str) -> anyhow::Result<Self> {
        let root = fhirwall::kernel::CgroupRoot::discover().context("finding cgroup v2")?;
        let dir = root.mount.join(unique(prefix));
        fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self { dir })
    }

    /// A child cgroup (created on first use).
    pub fn child(&self, name: &str) -> anyhow::Result<PathBuf> {
        let dir = self.dir.join(name);
        if !dir.exists() {
            fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        Ok(dir)
    }

    #[must_use]
    pub fn id(dir: &Path) -> u64 {
        fhirwall::kernel::cgroup_id(dir).expect("a cgroup this test created")
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Every cgroup below, nested ones included (a test may build a hierarchy), parents
        // before children; removed children first.
        let mut dirs = vec![self.dir.clone()];
        let mut i = 0;
        while i < dirs.len() {
            if let Ok(rd) = fs::read_dir(&dirs[i]) {
                let children = rd.filter_map(Result::ok).map(|e| e.path());
                dirs.extend(children.filter(|p| p.is_dir()).collect::<Vec<_>>());
            }
            i += 1;
        }
        // cgroup.kill (Linux 5.14) kills everything still inside, descendants included.
        let _ = fs::write(self.dir.join("cgroup.kill"), "1");
        let deadline = Instant::now() + Duration::from_secs(5);
        for dir in dirs.iter().rev() {
            while fs::remove_dir(dir).is_err() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// A tmpfs of `size` (e.g. `8M`) mounted on `dir` (created if missing), unmounted on drop, also
/// when the test fails. Lazily (`umount -l`), so a process still holding a file cannot keep it.
pub struct TmpfsGuard {
    pub dir: PathBuf,
}

impl TmpfsGuard {
    pub fn mount(dir: &Path, size: &str) -> anyhow::Result<Self> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(dir)
            .output()
            .context("running mount")?;
        if !out.status.success() {
            bail!(
                "mount -t tmpfs on {} failed: {}",
                dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Fills the file system with one file until no byte more fits, and returns its path.
    pub fn fill(&self) -> anyhow::Result<PathBuf> {
        let filler = self.dir.join("filler");
        let mut f = fs::File::create(&filler).context("creating the filler")?;
        let block = vec![0xa5u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        // Smaller writes take the last partial block.
        while f.write_all(&[0xa5]).is_ok() {}
        let _ = f.sync_all();
        Ok(filler)
    }
}

impl Drop for TmpfsGuard {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.dir).status();
    }
}

/// A bpffs pin directory for one test; everything under it is detached and unpinned on drop.
pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    #[must_use]
    pub fn new() -> Self {
        Self::with_prefix("fhirwall-test")
    }

    /// `/sys/fs/bpf/<prefix>-<pid>-<n>`.
    #[must_use]
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            path: PathBuf::from("/sys/fs/bpf").join(unique(prefix)),
        }
    }
}

impl Default for PinDir {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = fhirwall::kernel::uninstall(&self.path) {
            eprintln!("cleaning {}: {e:#}", self.path.display());
        }
    }
}

/// Detaches the pinned bpf link at `pin` while leaving the pin in place, as an administrator's
/// `bpftool link detach` would (`BPF_OBJ_GET`, then `BPF_LINK_DETACH`; include/uapi/linux/bpf.h).
pub fn detach_link(pin: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt as _;
    const BPF_OBJ_GET: libc::c_long = 7;
    const BPF_LINK_DETACH: libc::c_long = 34;
    #[repr(C)]
    struct ObjGet {
        pathname: u64,
        bpf_fd: u32,
        file_flags: u32,
        path_fd: i32,
        pad: u32,
    }
    let path = std::ffi::CString::new(pin.as_os_str().as_bytes())?;
    let mut get = ObjGet {
        pathname: path.as_ptr() as u64,
        bpf_fd: 0,
        file_flags: 0,
        path_fd: 0,
        pad: 0,
    };
    // SAFETY: a valid BPF_OBJ_GET attribute whose path outlives the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_OBJ_GET,
            std::ptr::addr_of_mut!(get),
            std::mem::size_of::<ObjGet>(),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor to us.
    let fd = unsafe {
        <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(
            i32::try_from(fd).map_err(std::io::Error::other)?,
        )
    };
    let mut link_fd = [std::os::fd::AsRawFd::as_raw_fd(&fd).cast_unsigned(), 0];
    // SAFETY: BPF_LINK_DETACH reads one u32 link fd.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_LINK_DETACH,
            link_fd.as_mut_ptr(),
            std::mem::size_of_val(&link_fd),
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// A running `fw-probe`: a workload process in a test cgroup. Killed on drop.
pub struct Probe {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    pub pid: u32,
}

impl Probe {
    /// Starts the probe; with `--wait` in `args` it stops before connecting until [`Probe::go`].
    pub fn spawn(args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(target_binary("fw-probe")?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("spawning fw-probe")?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("probe stdout")?);
        let pid = child.id();
        let mut probe = Self {
            child,
            stdin,
            stdout,
            pid,
        };
        if args.contains(&"--wait") {
            let line = probe.line()?;
            if !line.starts_with("ready ") {
                bail!("probe said {line:?} instead of ready");
            }
        }
        Ok(probe)
    }

    /// Runs a probe to completion and returns its JSON report.
    pub fn run(args: &[&str]) -> anyhow::Result<Value> {
        let mut probe = Self::spawn(args)?;
        probe.report()
    }

    /// Lets a `--wait` probe connect, or a `--hold` probe finish.
    pub fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("probe stdin closed")?;
        stdin.write_all(b"go\n").context("signalling the probe")?;
        Ok(())
    }

    /// The next JSON report line.
    pub fn report(&mut self) -> anyhow::Result<Value> {
        let line = self.line()?;
        serde_json::from_str(&line).with_context(|| format!("probe printed {line:?}"))
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self
            .stdout
            .read_line(&mut line)
            .context("reading the probe")?
            == 0
        {
            bail!("the probe exited without reporting");
        }
        Ok(line.trim_end().to_owned())
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A binary of this workspace built next to the running test (`target/<profile>/<name>`), or
/// next to the running binary itself (the benchmark binaries live there).
pub fn target_binary(name: &str) -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the running binary")?;
    // target/<profile>/deps/<test>-<hash> -> target/<profile>/<name>; target/<profile>/<bin> -> same dir
    let candidates = [exe.parent(), exe.parent().and_then(Path::parent)];
    for dir in candidates.into_iter().flatten() {
        let path = dir.join(name);
        if path.is_file() {
            return Ok(path);
        }
    }
    bail!(
        "{name} is missing next to {}: build the workspace binaries first (cargo xtask test does)",
        exe.display()
    )
}

/// Polls `f` until it returns `Some` or `timeout` passes. For waiting on the kernel or a process,
/// never for asserting speed.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A temporary directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(prefix: &str) -> anyhow::Result<Self> {
        let dir = std::env::temp_dir().join(unique(prefix));
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self(dir))
    }

    #[must_use]
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// A command that joins the cgroup `dir` before it execs `program`, so that the kernel programs
/// attached above `dir` see (and redirect) its connects. Add the arguments with `.args(..)`.
#[must_use]
pub fn in_cgroup(dir: &Path, program: &str) -> Command {
    let mut command = Command::new("sh");
    command.args([
        "-c",
        r#"echo $$ > "$0/cgroup.procs" && exec "$@""#,
        &dir.display().to_string(),
        program,
    ]);
    command
}

/// A `/proc/<pid>/status` field in KiB (`VmRSS`, `VmHWM`, ...).
#[must_use]
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Spawns `cmd` as a test's server: stdin closed, stdout and stderr to the file `log`, in a
/// process group of its own (a Ctrl-C meant for the test does not stop it before the test's
/// guards do).
pub fn spawn_server(
    cmd: &mut std::process::Command,
    log: &Path,
) -> anyhow::Result<std::process::Child> {
    use std::os::unix::process::CommandExt as _;
    let log = fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    Ok(cmd
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()?)
}

/// `cmd` (curl, perhaps started in a cgroup) GETs `url` trusting `ca`, with `headers`
/// (`Name: value`): the status, `000` when there was no HTTP answer.
#[must_use]
pub fn curl_status(
    mut cmd: std::process::Command,
    ca: &Path,
    url: &str,
    headers: &[&str],
) -> String {
    cmd.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--max-time",
        "15",
    ])
    .arg("--cacert")
    .arg(ca);
    for header in headers {
        cmd.args(["-H", header]);
    }
    let out = cmd.arg(url).output().expect("running curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
