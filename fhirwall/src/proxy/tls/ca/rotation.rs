//! Replacing the node CA without a flag day. `fhirwall ca rotate` writes the next CA beside the
//! current one (`<dir>.next/`, with the time it takes over in `switch-at`); during the overlap
//! `fhirwall ca export` prints both, so EHR hosts trust both; at that time the agent switches to
//! the next CA and keeps the old one as `<dir>.previous/`. Each step is one `rename(2)`, and a
//! switch cut short by a crash is finished at the next look.

use std::{
    fs,
    path::{Path, PathBuf},
};

use jiff::Timestamp;

use super::{CaSpec, LocalCa, TlsError, files};

const SWITCH_AT: &str = "switch-at";

/// Where the next CA waits: `<dir>.next`.
#[must_use]
pub fn next_dir(dir: &Path) -> PathBuf {
    sibling(dir, "next")
}

/// Where the replaced CA is kept: `<dir>.previous`.
#[must_use]
pub fn previous_dir(dir: &Path) -> PathBuf {
    sibling(dir, "previous")
}

fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    dir.with_file_name(name)
}

/// Creates the next CA from `spec`, to take over at `switch_at`; replaces a next CA not yet
/// switched to.
pub fn prepare(dir: &Path, spec: &CaSpec, switch_at: Timestamp) -> Result<LocalCa, TlsError> {
    let next = next_dir(dir);
    let ca = LocalCa::create(&next, spec)?;
    files::write_atomic(
        &next,
        SWITCH_AT,
        switch_at.to_string().as_bytes(),
        files::KEY_MODE,
    )?;
    Ok(ca)
}

/// When the next CA takes over, if one waits.
pub fn pending(dir: &Path) -> Result<Option<Timestamp>, TlsError> {
    let path = next_dir(dir).join(SWITCH_AT);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(TlsError::File {
                path,
                action: "read",
                source,
            });
        }
    };
    text.trim().parse().map(Some).map_err(|_| TlsError::BadPem {
        path,
        reason: "not an RFC 3339 time",
    })
}

/// Makes the next CA the current one if its time has come (or a switch was cut short), keeping
/// the current one as `<dir>.previous`. Returns whether it switched.
pub fn switch_if_due(dir: &Path, now: Timestamp) -> Result<bool, TlsError> {
    let next = next_dir(dir);
    let interrupted = !dir.exists() && next.exists();
    if !interrupted && pending(dir)?.is_none_or(|at| at > now) {
        return Ok(false);
    }
    let rename = |from: &Path, to: &Path| {
        fs::rename(from, to).map_err(|source| TlsError::File {
            path: from.to_owned(),
            action: "rename",
            source,
        })
    };
    if !interrupted {
        let previous = previous_dir(dir);
        if previous.exists() {
            fs::remove_dir_all(&previous).map_err(|source| TlsError::File {
                path: previous.clone(),
                action: "remove",
                source,
            })?;
        }
        rename(dir, &previous)?;
    }
    rename(&next, dir)?;
    // Gone with the switch; a leftover would say nothing (only `<dir>.next` is read).
    let _ = fs::remove_file(dir.join(SWITCH_AT));
    if let Some(parent) = dir.parent() {
        files::sync_dir(parent)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_ca_takes_over_at_its_time_and_the_old_one_is_kept() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("ca");
        let (old, _) = LocalCa::init(&dir, &CaSpec::new("n")).expect("init");
        let now = Timestamp::now();
        let at = now + jiff::SignedDuration::from_hours(1);
        let next = prepare(&dir, &CaSpec::new("n"), at).expect("prepare");
        assert_eq!(pending(&dir).expect("pending"), Some(at));
        assert!(!switch_if_due(&dir, now).expect("not yet"));
        assert_eq!(
            LocalCa::load(&dir).expect("load").cert_der(),
            old.cert_der()
        );

        assert!(switch_if_due(&dir, at).expect("due"));
        assert_eq!(
            LocalCa::load(&dir).expect("load").cert_der(),
            next.cert_der()
        );
        assert_eq!(
            LocalCa::load(&previous_dir(&dir)).expect("kept").cert_der(),
            old.cert_der()
        );
        assert_eq!(pending(&dir).expect("pending"), None);
        assert!(!switch_if_due(&dir, at).expect("nothing waits"));
    }

    #[test]
    fn a_switch_cut_short_between_its_renames_is_finished() {
        let base = tempfile::tempdir().expect("tempdir");
        let dir = base.path().join("ca");
        LocalCa::init(&dir, &CaSpec::new("n")).expect("init");
        let far = Timestamp::now() + jiff::SignedDuration::from_hours(100);
        let next = prepare(&dir, &CaSpec::new("n"), far).expect("prepare");
        fs::rename(&dir, previous_dir(&dir)).expect("the first rename, then a crash");
        assert!(switch_if_due(&dir, Timestamp::now()).expect("finished"));
        assert_eq!(
            LocalCa::load(&dir).expect("load").cert_der(),
            next.cert_der()
        );
    }
}
