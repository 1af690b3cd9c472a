//! Which programs are attached to a cgroup (`BPF_PROG_QUERY`): how the agent checks, at every
//! heartbeat, that its redirect is still in place. aya offers this query only for a few program
//! types, not for `cgroup/connect*`, hence the direct system call.
//!
//! Layout: `union bpf_attr`, the `BPF_PROG_QUERY` member, include/uapi/linux/bpf.h.

use std::{fs::File, io, os::fd::AsRawFd as _, path::Path};

const BPF_PROG_QUERY: libc::c_long = 16;

/// `enum bpf_attach_type` values of the programs that redirect.
pub const ATTACH_SOCK_OPS: u32 = 3;
pub const ATTACH_INET4_CONNECT: u32 = 10;
pub const ATTACH_INET6_CONNECT: u32 = 11;
pub const ATTACH_UDP4_SENDMSG: u32 = 14;
pub const ATTACH_UDP6_SENDMSG: u32 = 15;

/// Enough for every program a busy host attaches to one hook of one cgroup.
const MAX_PROGRAMS: usize = 64;

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    pad: u32,
    prog_attach_flags: u64,
    link_ids: u64,
    link_attach_flags: u64,
    revision: u64,
}
const _: () = assert!(size_of::<QueryAttr>() == 64);

/// Ids of the programs attached directly to `cgroup` for `attach_type`.
pub fn attached(cgroup: &Path, attach_type: u32) -> io::Result<Vec<u32>> {
    let dir = File::open(cgroup)?;
    let mut ids = [0u32; MAX_PROGRAMS];
    let mut attr = QueryAttr {
        target_fd: u32::try_from(dir.as_raw_fd()).map_err(io::Error::other)?,
        attach_type,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: u32::try_from(MAX_PROGRAMS).map_err(io::Error::other)?,
        ..QueryAttr::default()
    };
    // SAFETY: `attr` is a valid BPF_PROG_QUERY attribute of the size passed; `prog_ids` points
    // at `prog_cnt` writable u32s that outlive the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_QUERY,
            std::ptr::addr_of_mut!(attr),
            size_of::<QueryAttr>(),
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    let count = (attr.prog_cnt as usize).min(MAX_PROGRAMS);
    Ok(ids[..count].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_not_a_cgroup_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert!(attached(dir.path(), ATTACH_INET4_CONNECT).is_err());
    }
}
