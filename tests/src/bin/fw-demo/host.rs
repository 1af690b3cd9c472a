//! What the demo changes on the host so that its workloads match the selectors in policies/ for
//! real: system users, and executables at the paths the integrations name. Everything created
//! is recorded and removed on drop; anything that already existed is left alone.

use std::{
    fs,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

/// The passwd comment of the users the demo creates.
const COMMENT: &str = "fhirwall demo workload";

/// A string every build of the demo client contains.
const CLIENT_MARK: &str = "src/bin/fw-demo-client.rs";

#[derive(Default)]
pub struct HostChanges {
    users: Vec<String>,
    files: Vec<PathBuf>,
    /// Directories created, parents before children.
    dirs: Vec<PathBuf>,
}

impl HostChanges {
    /// Creates a system user (and its group) unless it exists. A user left by an earlier run
    /// that was killed (recognised by its comment) is adopted and removed at the end.
    pub fn ensure_user(&mut self, name: &str) -> anyhow::Result<()> {
        if fhirwall_tests::confined::id(name, "-u").is_ok() {
            if passwd_comment(name).as_deref() == Some(COMMENT) {
                self.users.push(name.to_owned());
            }
            return Ok(());
        }
        let status = Command::new("useradd")
            .args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--comment",
                COMMENT,
                name,
            ])
            .status()
            .context("running useradd")?;
        if !status.success() {
            bail!("useradd {name} failed: {status}");
        }
        self.users.push(name.to_owned());
        Ok(())
    }

    /// Copies `source` to `target` (mode 0755), creating missing parent directories. A file
    /// already at `target` is only replaced when it is the demo client left by an earlier run
    /// that was killed; anything else there is someone's and the demo refuses to touch it.
    pub fn install(&mut self, source: &Path, target: &Path) -> anyhow::Result<()> {
        if target.exists() {
            // The client's own source path is in its binary (panic locations).
            let ours = fs::read(target).is_ok_and(|b| {
                b.windows(CLIENT_MARK.len())
                    .any(|w| w == CLIENT_MARK.as_bytes())
            });
            if !ours {
                bail!(
                    "{} already exists and is not the demo's: the demo will not replace it",
                    target.display()
                );
            }
        }
        self.create_parents(target)?;
        fs::copy(source, target).with_context(|| format!("installing {}", target.display()))?;
        fs::set_permissions(target, fs::Permissions::from_mode(0o755))?;
        self.files.push(target.to_owned());
        Ok(())
    }

    fn create_parents(&mut self, target: &Path) -> anyhow::Result<()> {
        let mut missing = Vec::new();
        let mut dir = target.parent();
        while let Some(d) = dir.filter(|d| !d.exists()) {
            missing.push(d.to_owned());
            dir = d.parent();
        }
        for d in missing.into_iter().rev() {
            fs::create_dir(&d).with_context(|| format!("creating {}", d.display()))?;
            self.dirs.push(d);
        }
        Ok(())
    }

    /// What was changed, for the demo's opening lines.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if !self.users.is_empty() {
            parts.push(format!("created users {}", self.users.join(", ")));
        }
        if !self.files.is_empty() {
            let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
            parts.push(format!("installed {}", files.join(", ")));
        }
        parts.join("; ")
    }
}

fn passwd_comment(user: &str) -> Option<String> {
    let out = Command::new("getent")
        .args(["passwd", user])
        .output()
        .ok()?;
    let line = String::from_utf8_lossy(&out.stdout).into_owned();
    line.split(':').nth(4).map(str::to_owned)
}

impl Drop for HostChanges {
    fn drop(&mut self) {
        for file in &self.files {
            let _ = fs::remove_file(file);
        }
        for dir in self.dirs.iter().rev() {
            // Only if empty: something else may have put files there meanwhile.
            let _ = fs::remove_dir(dir);
        }
        for user in &self.users {
            let status = Command::new("userdel").arg(user).status();
            if !status.is_ok_and(|s| s.success()) {
                eprintln!("warning: could not remove the demo user {user}");
            }
        }
    }
}
