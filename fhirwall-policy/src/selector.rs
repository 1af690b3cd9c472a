//! Workload selectors: which processes are a given integration.

use serde::{Deserialize, Serialize};

use crate::Workload;

/// Every field that is set must match (AND). At least one field must be set. Globs (`*`, `?`,
/// `[...]`) are allowed in `exe` and `cgroup`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSelector {
    /// Executable path (glob), as `/proc/<pid>/exe` resolves it.
    #[serde(default)]
    pub exe: Option<Glob>,
    /// Lowercase hex SHA-256 of the executable.
    #[serde(default)]
    pub sha256: Option<Sha256>,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub uid: Option<u32>,
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub gid: Option<u32>,
    /// cgroup v2 path (glob), e.g. `/system.slice/lab-*.service`.
    #[serde(default)]
    pub cgroup: Option<Glob>,
    /// systemd unit, e.g. `lab-interface.service`.
    #[serde(default)]
    pub systemd_unit: Option<String>,
    #[serde(default)]
    pub container_id: Option<String>,
    #[serde(default)]
    pub pod_uid: Option<String>,
}

impl WorkloadSelector {
    /// Whether the selector sets no field at all (a load error: it would match everything).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }

    /// Whether the selector names something only root controls: the user (`user`, `uid`), the
    /// executable's digest, or its root-owned path in the host's view (`exe`, checked per
    /// process). Units, containers, pods, cgroups and groups alone are not: a load error.
    #[must_use]
    pub fn has_anchor(&self) -> bool {
        self.user.is_some() || self.uid.is_some() || self.sha256.is_some() || self.exe.is_some()
    }

    /// Whether `workload` is selected. A field the workload does not know (a partial identity)
    /// never matches, nor does one it cannot vouch for: an executable path not verified in the
    /// host's view, names from a cgroup subtree a user controls.
    #[must_use]
    pub fn matches(&self, w: &Workload) -> bool {
        let exe = w
            .exe
            .as_deref()
            .filter(|_| w.exe_verified)
            .and_then(std::path::Path::to_str);
        let trusted = !w.cgroup_delegated;
        let unit = w.systemd_unit.as_deref().filter(|_| trusted);
        let container = w.container_id.as_deref().filter(|_| trusted);
        let pod = w.pod_uid.as_deref().filter(|_| trusted);
        opt(self.exe.as_ref(), exe, Glob::matches)
            && opt(self.sha256.as_ref(), w.exe_sha256.as_deref(), |s, v| {
                s.0 == v
            })
            && opt(self.user.as_deref(), w.user.as_deref(), |a, b| a == b)
            && self.uid.is_none_or(|uid| uid == w.uid)
            && opt(self.group.as_deref(), w.group.as_deref(), |a, b| a == b)
            && self.gid.is_none_or(|gid| gid == w.gid)
            && opt(self.cgroup.as_ref(), w.cgroup_path.as_deref(), |g, v| {
                g.matches(v)
            })
            && opt(self.systemd_unit.as_deref(), unit, |a, b| a == b)
            && opt(self.container_id.as_deref(), container, |a, b| a == b)
            && opt(self.pod_uid.as_deref(), pod, |a, b| a == b)
    }

    /// Whether some workload could match both selectors. Conservative: two selectors are only
    /// disjoint when a field both set cannot match the same value.
    #[must_use]
    pub fn may_overlap(&self, other: &Self) -> bool {
        let eq = |a: Option<&str>, b: Option<&str>| a.zip(b).is_none_or(|(a, b)| a == b);
        let globs =
            |a: Option<&Glob>, b: Option<&Glob>| a.zip(b).is_none_or(|(a, b)| a.may_overlap(b));
        globs(self.exe.as_ref(), other.exe.as_ref())
            && eq(
                self.sha256.as_ref().map(|s| s.0.as_str()),
                other.sha256.as_ref().map(|s| s.0.as_str()),
            )
            && eq(self.user.as_deref(), other.user.as_deref())
            && self.uid.zip(other.uid).is_none_or(|(a, b)| a == b)
            && eq(self.group.as_deref(), other.group.as_deref())
            && self.gid.zip(other.gid).is_none_or(|(a, b)| a == b)
            && globs(self.cgroup.as_ref(), other.cgroup.as_ref())
            && eq(self.systemd_unit.as_deref(), other.systemd_unit.as_deref())
            && eq(self.container_id.as_deref(), other.container_id.as_deref())
            && eq(self.pod_uid.as_deref(), other.pod_uid.as_deref())
    }
}

fn opt<P: ?Sized, V: ?Sized>(
    pattern: Option<&P>,
    value: Option<&V>,
    f: impl Fn(&P, &V) -> bool,
) -> bool {
    match (pattern, value) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(p), Some(v)) => f(p, v),
    }
}

/// A shell-style glob over paths, compiled at load.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Glob {
    text: String,
    pattern: glob::Pattern,
}

impl Glob {
    #[must_use]
    pub fn matches(&self, value: &str) -> bool {
        let options = glob::MatchOptions {
            case_sensitive: true,
            require_literal_separator: true,
            require_literal_leading_dot: false,
        };
        self.pattern.matches_with(value, options)
    }

    /// Whether some string could match both: literal prefixes (before the first wildcard) and
    /// suffixes (after the last) must be compatible. Sound for "disjoint", conservative otherwise.
    fn may_overlap(&self, other: &Self) -> bool {
        let wild = |c: char| matches!(c, '*' | '?' | '[');
        let prefix = |t: &str| t.find(wild).map_or(t.len(), |i| i);
        let suffix = |t: &str| t.rfind(wild).map_or(0, |i| i + 1);
        let (a, b) = (self.text.as_str(), other.text.as_str());
        if !a.contains(wild) {
            return other.matches(a);
        }
        if !b.contains(wild) {
            return self.matches(b);
        }
        let (pa, pb) = (&a[..prefix(a)], &b[..prefix(b)]);
        let (sa, sb) = (&a[suffix(a)..], &b[suffix(b)..]);
        (pa.starts_with(pb) || pb.starts_with(pa)) && (sa.ends_with(sb) || sb.ends_with(sa))
    }
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl Eq for Glob {}

impl TryFrom<String> for Glob {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        if !text.starts_with('/') {
            return Err(format!(
                "`{text}` must be an absolute path (starting with /)"
            ));
        }
        let pattern =
            glob::Pattern::new(&text).map_err(|e| format!("`{text}` is not a valid glob: {e}"))?;
        Ok(Self { text, pattern })
    }
}

impl From<Glob> for String {
    fn from(glob: Glob) -> Self {
        glob.text
    }
}

/// A lowercase hex SHA-256 digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sha256(pub String);

impl TryFrom<String> for Sha256 {
    type Error = String;

    fn try_from(hex: String) -> Result<Self, Self::Error> {
        let hex = hex
            .strip_prefix("sha256:")
            .map(str::to_owned)
            .unwrap_or(hex);
        if hex.len() == 64
            && hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            Ok(Self(hex))
        } else {
            Err("sha256 must be 64 lowercase hex digits".to_owned())
        }
    }
}

impl From<Sha256> for String {
    fn from(s: Sha256) -> Self {
        s.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn glob(s: &str) -> Glob {
        Glob::try_from(s.to_owned()).expect("test glob")
    }

    fn workload() -> Workload {
        Workload {
            uid: 1001,
            user: Some("labsvc".into()),
            exe: Some("/opt/lab/bin/lab-iface".into()),
            exe_verified: true,
            cgroup_path: Some("/system.slice/lab-iface.service".into()),
            systemd_unit: Some("lab-iface.service".into()),
            ..Workload::default()
        }
    }

    #[test]
    fn every_set_field_must_match() {
        let w = workload();
        let by_exe = WorkloadSelector {
            exe: Some(glob("/opt/lab/bin/*")),
            ..Default::default()
        };
        assert!(by_exe.matches(&w));
        let wrong_user = WorkloadSelector {
            user: Some("root".into()),
            ..by_exe.clone()
        };
        assert!(!wrong_user.matches(&w));
        let by_unit = WorkloadSelector {
            systemd_unit: Some("lab-iface.service".into()),
            uid: Some(1001),
            ..Default::default()
        };
        assert!(by_unit.matches(&w));
    }

    #[test]
    fn unknown_fields_of_a_partial_identity_never_match() {
        let partial = Workload {
            exe: None,
            ..workload()
        };
        let by_exe = WorkloadSelector {
            exe: Some(glob("/opt/lab/bin/*")),
            ..Default::default()
        };
        assert!(!by_exe.matches(&partial));
        let sha = WorkloadSelector {
            sha256: Some(Sha256::try_from("a".repeat(64)).expect("hex")),
            ..Default::default()
        };
        assert!(!sha.matches(&workload()));
    }

    /// Sets one name field of a selector.
    type SetName = fn(&mut WorkloadSelector);

    #[test]
    fn an_unverified_path_and_names_from_a_user_subtree_never_match() {
        let by_exe = WorkloadSelector {
            exe: Some(glob("/opt/lab/bin/*")),
            uid: Some(1001),
            ..Default::default()
        };
        let elsewhere = Workload {
            exe_verified: false,
            ..workload()
        };
        assert!(by_exe.matches(&workload()));
        assert!(
            !by_exe.matches(&elsewhere),
            "a bind mount or a user-replaceable file"
        );
        let by_names: [(&str, SetName); 3] = [
            ("unit", |s| {
                s.systemd_unit = Some("lab-iface.service".into());
            }),
            ("container", |s| {
                s.container_id = Some("c0ffee".into());
            }),
            ("pod", |s| {
                s.pod_uid = Some("pod-1".into());
            }),
        ];
        let named = Workload {
            container_id: Some("c0ffee".into()),
            pod_uid: Some("pod-1".into()),
            ..workload()
        };
        for (what, set) in by_names {
            let mut selector = WorkloadSelector {
                uid: Some(1001),
                ..Default::default()
            };
            set(&mut selector);
            assert!(selector.matches(&named), "{what}");
            let delegated = Workload {
                cgroup_delegated: true,
                ..named.clone()
            };
            assert!(!selector.matches(&delegated), "{what} from a user subtree");
        }
    }

    #[test]
    fn only_user_digest_and_path_anchor_a_selector() {
        let anchored = [
            WorkloadSelector {
                user: Some("lab".into()),
                ..Default::default()
            },
            WorkloadSelector {
                uid: Some(0),
                ..Default::default()
            },
            WorkloadSelector {
                sha256: Some(Sha256::try_from("a".repeat(64)).expect("hex")),
                ..Default::default()
            },
            WorkloadSelector {
                exe: Some(glob("/opt/lab/bin/lab")),
                ..Default::default()
            },
        ];
        assert!(anchored.iter().all(WorkloadSelector::has_anchor));
        let forgeable = WorkloadSelector {
            systemd_unit: Some("lab.service".into()),
            container_id: Some("c0ffee".into()),
            pod_uid: Some("pod-1".into()),
            cgroup: Some(glob("/system.slice/*")),
            group: Some("lab".into()),
            gid: Some(5),
            ..Default::default()
        };
        assert!(!forgeable.has_anchor());
    }

    #[test]
    fn globs_do_not_cross_directories() {
        assert!(!glob("/opt/*").matches("/opt/lab/bin/x"));
        assert!(glob("/opt/**/x").matches("/opt/lab/bin/x"));
    }

    #[test]
    #[expect(
        clippy::many_single_char_names,
        reason = "pairs of selectors compared in turn"
    )]
    fn overlap_is_decided_per_shared_field() {
        let a = WorkloadSelector {
            exe: Some(glob("/opt/lab/*")),
            ..Default::default()
        };
        let b = WorkloadSelector {
            exe: Some(glob("/opt/claims/*")),
            ..Default::default()
        };
        let c = WorkloadSelector {
            uid: Some(5),
            ..Default::default()
        };
        let d = WorkloadSelector {
            exe: Some(glob("/opt/lab/bin-*")),
            ..Default::default()
        };
        assert!(!a.may_overlap(&b));
        assert!(
            a.may_overlap(&c),
            "no shared field: a process could be both"
        );
        assert!(a.may_overlap(&d));
        let e = WorkloadSelector {
            exe: Some(glob("/usr/bin/python3")),
            uid: Some(1),
            ..Default::default()
        };
        let f = WorkloadSelector {
            exe: Some(glob("/usr/bin/python3")),
            uid: Some(2),
            ..Default::default()
        };
        assert!(!e.may_overlap(&f));
        let g = WorkloadSelector {
            exe: Some(glob("/usr/bin/*.py")),
            ..Default::default()
        };
        let h = WorkloadSelector {
            exe: Some(glob("/usr/bin/*.sh")),
            ..Default::default()
        };
        assert!(!g.may_overlap(&h));
    }

    #[test]
    fn rejects_relative_globs_and_bad_digests() {
        assert!(Glob::try_from("opt/x".to_owned()).is_err());
        assert!(Glob::try_from("/opt/[".to_owned()).is_err());
        assert!(Sha256::try_from("ABC".to_owned()).is_err());
        assert!(Sha256::try_from(format!("sha256:{}", "0f".repeat(32))).is_ok());
    }
}
