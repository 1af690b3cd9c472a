//! What a cgroup v2 path says about a process: container id and runtime, Kubernetes pod UID,
//! systemd unit. Pure string work on the path as `/proc/<pid>/cgroup` shows it (relative to the
//! hierarchy root).
//!
//! Naming, by who creates the cgroup:
//! - systemd cgroup driver (kubelet, containerd, CRI-O, docker, podman): units and slices, with
//!   `-` meaning hierarchy inside a slice name, so a pod UID's dashes become `_`:
//!   `/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/cri-containerd-<id>.scope`
//!   (<https://kubernetes.io/docs/setup/production-environment/container-runtimes/#systemd-cgroup-driver>,
//!   <https://systemd.io/CGROUP_DELEGATION/>)
//! - cgroupfs driver: plain directories, `/kubepods/burstable/pod<uid>/<id>`, `/docker/<id>`.
//! - systemd itself: `/system.slice/<unit>.service`, user managers nest their own slices and units
//!   inside `user@<uid>.service`.

use fhirwall_policy::ContainerRuntime;

/// Names found in a cgroup path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupIdentity {
    /// 64 hex digits, as the runtime names the container.
    pub container_id: Option<String>,
    /// `None` with a container id when the naming does not tell (a bare id under a pod is used by
    /// both containerd and dockershim with the cgroupfs driver).
    pub runtime: Option<ContainerRuntime>,
    /// Kubernetes pod UID with dashes.
    pub pod_uid: Option<String>,
    /// The systemd unit, when the process is not in a container.
    pub systemd_unit: Option<String>,
    /// The path runs through a user's own service manager (`user@UID.service`): the user names
    /// everything below it (`systemd-run --user --unit=...`, rootless containers).
    pub in_user_manager: bool,
}

/// Container scope prefixes (systemd driver) and cgroupfs directory prefixes, by runtime.
/// `crio-conmon-` and `libpod-conmon-` are runtime monitors on the host, not containers: their
/// remainder is not a bare id, so they fall through to systemd units.
const PREFIXES: [(&str, ContainerRuntime); 4] = [
    ("cri-containerd-", ContainerRuntime::Containerd),
    ("crio-", ContainerRuntime::Crio),
    ("docker-", ContainerRuntime::Docker),
    ("libpod-", ContainerRuntime::Podman),
];

/// Parses a cgroup v2 path. Unknown layouts give an empty identity, never an error.
#[must_use]
pub fn parse_cgroup_path(path: &str) -> CgroupIdentity {
    let mut identity = CgroupIdentity::default();
    let mut units = UnitWalk::default();
    let mut parent: Option<&str> = None;
    let mut in_kubepods = false;
    for component in path.split('/').filter(|c| !c.is_empty()) {
        identity.in_user_manager |= user_manager(component);
        if let Some(uid) = pod_uid(component, in_kubepods) {
            identity.pod_uid = Some(uid);
        }
        in_kubepods |= component.starts_with("kubepods");
        match container(component, parent, identity.pod_uid.is_some()) {
            Some((runtime, id)) => {
                identity.container_id = Some(id.to_owned());
                identity.runtime = runtime;
                units.enter_container();
            }
            None => units.visit(component),
        }
        parent = Some(component);
    }
    identity.systemd_unit = units.unit.map(str::to_owned);
    identity
}

/// `user@<uid>.service`: the unit systemd runs a user's own service manager in.
fn user_manager(component: &str) -> bool {
    component
        .strip_prefix("user@")
        .and_then(|rest| rest.strip_suffix(".service"))
        .is_some_and(|uid| !uid.is_empty() && uid.bytes().all(|b| b.is_ascii_digit()))
}

/// A container id in one path component, with the runtime its naming shows.
fn container<'a>(
    component: &'a str,
    parent: Option<&str>,
    in_pod: bool,
) -> Option<(Option<ContainerRuntime>, &'a str)> {
    let name = component.strip_suffix(".scope").unwrap_or(component);
    for (prefix, runtime) in PREFIXES {
        if let Some(id) = name.strip_prefix(prefix).filter(|id| is_container_id(id)) {
            return Some((Some(runtime), id));
        }
    }
    if !is_container_id(component) {
        return None;
    }
    match parent {
        Some("docker") => Some((Some(ContainerRuntime::Docker), component)),
        _ if in_pod => Some((None, component)),
        // A bare id anywhere else is a guess; a wrong container id is worse than none.
        _ => None,
    }
}

/// Runtimes name containers by 64 lowercase hex digits (a SHA-256).
fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// `kubepods[-<qos>]-pod<uid_>.slice` (systemd driver) or `pod<uid>` below `kubepods` (cgroupfs).
fn pod_uid(component: &str, in_kubepods: bool) -> Option<String> {
    let raw = if let Some(slice) = component.strip_suffix(".slice") {
        if !slice.starts_with("kubepods") {
            return None;
        }
        slice.rsplit_once("-pod")?.1
    } else if in_kubepods {
        component.strip_prefix("pod")?
    } else {
        return None;
    };
    let uid = raw.replace('_', "-");
    let valid = !uid.is_empty()
        && uid.len() <= 64
        && uid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    valid.then_some(uid)
}

/// Walks components for the innermost systemd unit: each systemd manager (the system one, a user
/// manager in `user@<uid>.service`, a container's) puts its units in slices, so a unit reached
/// through slices is a nested manager's unit and more specific. A plain directory below a unit is
/// a subtree the unit manages itself (cgroup delegation): the unit stays the answer.
#[derive(Default)]
struct UnitWalk<'a> {
    unit: Option<&'a str>,
    done: bool,
}

impl<'a> UnitWalk<'a> {
    #[expect(
        clippy::case_sensitive_file_extension_comparisons,
        reason = "systemd unit type suffixes are lowercase by definition (systemd.unit(5))"
    )]
    fn visit(&mut self, component: &'a str) {
        if self.done || component.ends_with(".slice") {
            return;
        }
        if component.ends_with(".service") || component.ends_with(".scope") {
            // A nested manager's own process lives in its `init.scope`: the manager's unit is
            // the better name for it.
            if self.unit.is_none() || component != "init.scope" {
                self.unit = Some(component);
            }
        } else if self.unit.is_some() {
            self.done = true;
        }
    }

    /// Everything below a container scope belongs to the container, whose identity is the
    /// container id, not the unit that happens to hold it.
    fn enter_container(&mut self) {
        self.unit = None;
        self.done = true;
    }
}

#[cfg(test)]
mod tests;
