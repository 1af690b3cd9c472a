//! The two enforcement layers and how the agent knows each is in place.
//!
//! - **redirect**: the `cgroup/connect*`, `sendmsg*` and `sock_ops` programs. Checked at every
//!   heartbeat by asking the kernel which programs the attach cgroup holds.
//! - **lsm**: the `lsm/socket_*` programs. Needs a kernel with BPF LSM active (`lsm=...,bpf`);
//!   checked once after attaching by a connect of the agent's own that the hook must count.

use std::path::Path;

use fhirwall_common::LsmConfig;
use serde::Serialize;

use super::{
    btf::{BtfError, KernelTypes},
    query,
};

/// Whether a layer is in place, and if not, why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum LayerState {
    Active,
    Missing { reason: String },
}

impl LayerState {
    #[must_use]
    pub fn is_active(&self) -> bool {
        matches!(self, Self::Active)
    }

    pub(super) fn missing(reason: impl Into<String>) -> Self {
        Self::Missing {
            reason: reason.into(),
        }
    }
}

/// Both layers, as `/v1/health` and the metrics report them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Layers {
    pub redirect: LayerState,
    pub lsm: LayerState,
}

impl Layers {
    /// Each layer by name, and whether it is in place (for the metrics).
    #[must_use]
    pub fn named(&self) -> [(&'static str, bool); 2] {
        [
            ("redirect", self.redirect.is_active()),
            ("lsm", self.lsm.is_active()),
        ]
    }
}

/// The LSM programs' configuration for a scope cgroup at `level` below the hierarchy root.
pub(super) fn lsm_config(scope_cgroup: u64, level: u32) -> Result<LsmConfig, BtfError> {
    let types = KernelTypes::running()?;
    let sock = |member: &str| types.offset("sock", &["__sk_common", member]);
    Ok(LsmConfig {
        scope_cgroup,
        scope_level: level,
        socket_sk: types.offset("socket", &["sk"])?,
        pad: 0,
        sock_mark: types.offset("sock", &["sk_mark"])?,
        sk_family: sock("skc_family")?,
        sk_daddr: sock("skc_daddr")?,
        sk_dport: sock("skc_dport")?,
        sk_v6_daddr: sock("skc_v6_daddr")?,
        msg_name: types.offset("msghdr", &["msg_name"])?,
        msg_namelen: types.offset("msghdr", &["msg_namelen"])?,
    })
}

/// `Some(false)` when securityfs lists the active LSMs and `bpf` is not among them; `None`
/// when it cannot be told (securityfs not mounted): then only the self-check decides.
pub(super) fn bpf_lsm_listed() -> Option<bool> {
    let list = std::fs::read_to_string("/sys/kernel/security/lsm").ok()?;
    Some(list.trim().split(',').any(|name| name == "bpf"))
}

/// Level of `cgroup` below the hierarchy's `mount` (0 for the root itself).
pub(super) fn level(mount: &Path, cgroup: &Path) -> Option<u32> {
    let below = cgroup.strip_prefix(mount).ok()?;
    u32::try_from(below.components().count()).ok()
}

/// The redirect's programs on `cgroup`: each `(attach type, program id)` must be listed.
pub(super) fn redirect_state(cgroup: &Path, ours: &[(u32, u32)]) -> LayerState {
    for (attach_type, id) in ours {
        match query::attached(cgroup, *attach_type) {
            Ok(ids) if ids.contains(id) => {}
            Ok(_) => {
                return LayerState::missing(format!(
                    "program {id} is no longer attached to {} (attach type {attach_type})",
                    cgroup.display()
                ));
            }
            Err(e) => {
                return LayerState::missing(format!(
                    "cannot list the programs of {}: {e}",
                    cgroup.display()
                ));
            }
        }
    }
    if ours.is_empty() {
        return LayerState::missing("not attached yet");
    }
    LayerState::Active
}

/// Makes the agent's own connect that the LSM connect hook counts (a UDP connect sends nothing).
pub(super) fn touch_connect_hook() -> std::io::Result<()> {
    let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
    socket.connect((std::net::Ipv4Addr::LOCALHOST, 9))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_count_the_directories_below_the_mount() {
        let mount = Path::new("/sys/fs/cgroup");
        assert_eq!(level(mount, mount), Some(0));
        assert_eq!(level(mount, Path::new("/sys/fs/cgroup/a/b")), Some(2));
        assert_eq!(level(mount, Path::new("/elsewhere")), None);
    }
}
