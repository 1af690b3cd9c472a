//! Starting a workload the way a host runs it: inside a given cgroup (so the kernel programs
//! attached to the test or demo cgroup see it, and a directory named like a systemd unit gives
//! it that unit), optionally as a given user, with its own executable as `/proc/<pid>/exe`.
//!
//! `sh` joins the cgroup with its own pid and `exec`s `setpriv` (util-linux), which drops to the
//! user and `exec`s the program: the pid stays the same through both execs, so the child's pid
//! is the workload's tgid, and nothing of the helpers remains in the process image.

use std::{
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

/// A command for `program` in `cgroup`, as `user` (root when `None`). Add arguments, env and
/// stdio to it as usual.
pub fn command(cgroup: &Path, user: Option<&str>, program: &Path) -> anyhow::Result<Command> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#"echo $$ > "$0/cgroup.procs" && exec "$@""#)
        .arg(cgroup);
    if let Some(user) = user {
        let gid = id(user, "-g")?;
        cmd.arg("setpriv")
            .arg(format!("--reuid={user}"))
            .arg(format!("--regid={gid}"))
            .arg("--init-groups")
            .arg("--");
    }
    cmd.arg(program).stdin(Stdio::null());
    Ok(cmd)
}

/// `id <flag> <user>`: the uid (`-u`) or primary gid (`-g`) of a user.
pub fn id(user: &str, flag: &str) -> anyhow::Result<u32> {
    let out = Command::new("id")
        .args([flag, user])
        .output()
        .context("running id")?;
    if !out.status.success() {
        bail!("no user {user}");
    }
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .with_context(|| format!("id {flag} {user}"))
}
